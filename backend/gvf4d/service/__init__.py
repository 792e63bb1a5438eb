"""The local backend service: HTTP API (FastAPI) over a SQLite job store and one GPU worker."""
