"""The HTTP API for the Actions menu (`backfill api`): the FastAPI app, the request guard (key
first, then body limits), one error shape, the request and response schemas, the endpoints."""
