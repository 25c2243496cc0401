"""The query-by-image service: an archive (:mod:`ahcl.serve.store`) behind an HTTP API and a web
page. :mod:`ahcl.serve.app` assembles the routers of :mod:`ahcl.serve.routes`; uploads are
checked by :mod:`ahcl.serve.uploads`. Needs FastAPI, uvicorn and python-multipart."""

from ahcl.serve.app import create_app
from ahcl.serve.settings import ServeSettings
from ahcl.serve.store import Archive
from ahcl.serve.uploads import UploadError, decode_upload

__all__ = ["Archive", "ServeSettings", "UploadError", "create_app", "decode_upload"]
