"""Names vulture (the dead-code check in .ci/run) cannot see used, each with who uses it.

Dagster loads ``defs`` by name; pydantic reads ``model_config``; werkzeug and cheroot call the
sandbox servers' logging hooks, http.server the dev alert receiver's handler; a TYPE_CHECKING
import serves string annotations only; the product's command line finds the local tools'
subcommands by entry point.
"""

from canvas_assets import definitions
from canvas_assets.commands import canvas_connect
from canvas_assets.defs import jobs
from canvas_assets.settings import Settings
from canvas_devstack import alert_receiver, commands
from canvas_sandbox import server
from canvas_sandbox.model import Floor

definitions.defs  # Dagster's code location: [tool.dg.project] in pyproject.toml
jobs.UnresolvedAssetJobDefinition  # the Jobs record's field annotations
Settings.model_config  # pydantic
Settings.canvas_base_url  # validated at load only (the value reaches resources as dg.EnvVar)
Settings.live_events_queue_url
server._KeepAliveServer.error_log  # cheroot calls it
server._QuietHandler.log_request  # werkzeug calls it
canvas_connect._handler.do_GET  # http.server calls the callback handler's hooks
canvas_connect._handler.log_message
alert_receiver._Printer.do_POST  # http.server calls them
alert_receiver._Printer.log_message
commands.add_dev_command  # entry points in local/pyproject.toml
commands.add_sandbox_command
Floor.chain  # reported through Floor.as_dict (the benchmark's floor figures)
Floor.in_service
Floor.account_user_pages
Floor.user_gets
