"""The service's defaults and limits, in a module that imports nothing: the CLI's parser reads the
serve flags' defaults from here without loading FastAPI."""

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8000
DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024  # a 280x280 canvas PNG is ~10 kB; 4 MiB leaves room for batches and photos
MAX_IMAGES = 64
"""Images per request, in any form; more is a 422."""
MAX_EXPLAIN_IMAGES = 8
"""Images per /v1/explain request (each costs a forward pass and 32 backward ones); more is a 422."""
