"""The local stack of canvas-assets (``canvas-assets dev``): an embedded PostgreSQL, a local SQS,
the Canvas sandbox, and Dagster's code server, webserver and daemon in their production shape.
Never part of the product's wheel or image."""
