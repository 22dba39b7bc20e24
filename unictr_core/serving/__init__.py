"""Online prediction: `unictr serve` (the HTTP API in :mod:`.app`, dynamic batching in :mod:`.batcher`,
the live registry in :mod:`.state`). Needs the optional extra ``serve`` (FastAPI, uvicorn, prometheus-client).
"""
