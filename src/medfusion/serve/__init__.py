"""The web service: FastAPI routes and a plain HTML/JS page over the library (:func:`create_app`)."""

from medfusion.serve.app import create_app

__all__ = ["create_app"]
