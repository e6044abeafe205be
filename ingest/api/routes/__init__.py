"""One module per resource, each a list of ``RouteSpec`` (router, OpenAPI and metric labels)."""
