"""Alerts: incidents remembered in the warehouse (one alert when one opens, one when it
recovers), the channels that carry them (a webhook, Slack, Microsoft Teams, e-mail), and the
messages, scrubbed of every secret. The Dagster side (which runs failed, which checks fail, the
sensors) is ``canvas_assets/defs/alerting.py`` and ``defs/sensors/alerts.py``."""
