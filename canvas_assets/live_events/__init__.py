"""Canvas Live Events: the SQS queue, parsing, durable landing, routing to semesters, and the
per-semester apply. The sensor and the apply run (in ``defs``) call into here."""
