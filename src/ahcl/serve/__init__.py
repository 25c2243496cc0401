"""The query-by-image service: an archive (:mod:`ahcl.serve.store`) behind an HTTP API and a web
page (:mod:`ahcl.serve.app`). Needs the ``serve`` extras (FastAPI, uvicorn, python-multipart)."""

from ahcl.serve.app import ServerThread, ServeSettings, create_app
from ahcl.serve.store import Archive, UploadError, decode_upload

__all__ = ["Archive", "ServeSettings", "ServerThread", "UploadError", "create_app",
           "decode_upload"]
