"""One search hit, the same shape for the library, the CLI and the service."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Hit:
    """One search result.

    Attributes:
        id: the item's id (for a run's own database: its database row).
        distance: Hamming distance to the query.
        label: class id, ``-1`` when unknown.
        class_name: the class's name when known, else ``None``.
        path: the image file of the item when known, else ``None``.
        meta: the item's stored metadata (``{}`` when none).
        instance_distance: for a split index (:attr:`ahcl.index.HammingIndex.split`), the
            Hamming distance of the instance-level parts (``distance`` is then the semantic
            one); ``None`` for a plain index.
    """

    id: int
    distance: int
    label: int = -1
    class_name: str | None = None
    path: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    instance_distance: int | None = None

    @property
    def index(self) -> int:
        """Alias of :attr:`id` (a run's database row), kept for code written against 0.1."""
        return self.id

    def to_dict(self, *, public: bool = False) -> dict[str, Any]:
        """JSON-safe record ``{"id", "distance", "instance_distance", "label", "class", "path",
        "meta"}``.

        Args:
            public: leave out ``path`` and ``meta`` (what the service shows: no server paths).
        """
        out: dict[str, Any] = {"id": self.id, "distance": self.distance,
                               "instance_distance": self.instance_distance, "label": self.label,
                               "class": self.class_name}
        if not public:
            out["path"] = self.path
            out["meta"] = self.meta
        return out


def hits_from_rows(ids: Any, distances: Any, labels: Any, metas: list[dict | None] | None = None,
                   classes: list[str] | None = None, *,
                   instance_distances: Any = None) -> list[Hit]:
    """Hits from parallel sequences (one query's results, already in rank order).

    ``classes`` names labels ``0..len-1``; a label outside it (``-1``: unlabelled) has no name.
    A meta's ``"path"`` becomes the hit's :attr:`Hit.path`. ``instance_distances`` (a split
    index's) become :attr:`Hit.instance_distance`; ``None``: none.
    """
    metas = metas if metas is not None else [None] * len(ids)
    inst = [None] * len(ids) if instance_distances is None \
        else [int(x) for x in instance_distances]
    out = []
    for i, d, lab, meta, di in zip(ids, distances, labels, metas, inst):
        lab = int(lab)
        meta = meta or {}
        name = classes[lab] if classes is not None and 0 <= lab < len(classes) else None
        out.append(Hit(int(i), int(d), lab, name, meta.get("path"), meta, di))
    return out


def hits_feature_collection(results: list[list[Hit]], queries: list[str] | None = None,
                            places: list[dict[str, Any] | None] | None = None
                            ) -> dict[str, Any]:
    """A GeoJSON FeatureCollection (RFC 7946) of search hits that carry a footprint
    (``meta["geometry"]``, as GeoTIFF tiles do): one Feature per hit with its query, rank, id,
    distances and class; hits without a footprint are left out. QGIS opens it as it is.

    Args:
        results: per query, its hits in rank order.
        queries: per query, the name shown as property ``query`` (default its number).
        places: per query, the meta (``scene``, ``window``, ``crs``, ``geometry``) of a query
            by place, or None; a place with a footprint comes first of its query's features,
            with property ``"role": "query"`` (hits have ``"role": "hit"``).
    """
    features = []
    for q, hits in enumerate(results):
        name = queries[q] if queries else q
        place = places[q] if places else None
        if place and place.get("geometry"):
            features.append({"type": "Feature", "id": f"{q}-query",
                             "geometry": place["geometry"],
                             "properties": {"role": "query", "query": name,
                                            **_place_properties(place)}})
        for rank, h in enumerate(hits, 1):
            geometry = h.meta.get("geometry")
            if not geometry:
                continue
            props: dict[str, Any] = {"role": "hit", "query": name, "rank": rank,
                                     "id": h.id, "distance": h.distance,
                                     "instance_distance": h.instance_distance,
                                     "label": h.label, "class": h.class_name,
                                     **_place_properties(h.meta)}
            features.append({"type": "Feature", "id": f"{q}-{rank}", "geometry": geometry,
                             "properties": props})
    return {"type": "FeatureCollection", "features": features}


def items_feature_collection(records: list[dict[str, Any]], metas: list[dict[str, Any] | None]
                             ) -> dict[str, Any]:
    """A GeoJSON FeatureCollection of archive items: one Feature per item whose meta has a
    footprint, Feature ``id`` the item's id, properties the item's ``record`` (``id``,
    ``label``, ``class``, ...) and its ``scene``, ``window`` and ``crs``."""
    features = [{"type": "Feature", "id": record["id"], "geometry": meta["geometry"],
                 "properties": {**record, **_place_properties(meta)}}
                for record, meta in zip(records, metas) if meta and meta.get("geometry")]
    return {"type": "FeatureCollection", "features": features}


def _place_properties(meta: dict[str, Any]) -> dict[str, Any]:
    """Where an item lies, as Feature properties: the ``scene`` (and ``scene_name``),
    ``window`` and ``crs`` of its meta, those it has."""
    return {key: meta[key] for key in ("scene", "scene_name", "window", "crs") if key in meta}
