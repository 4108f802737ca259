"""The channels an alert goes out by: a generic webhook (JSON POST), Slack (dagster-slack's
client), Microsoft Teams (dagster-msteams' webhook client) and e-mail (SMTP). Each is configured
by the environment and none by default; secrets reach the resource as ``dg.EnvVar``.

A channel that does not take an alert raises ``ChannelRefused`` with one line that names the
channel and why, and never quotes the exception it caught: requests' and smtplib's errors can
carry the URL (a webhook's URL is its credential) or the server's greeting.
"""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage

import dagster as dg
import requests
from dagster_msteams import MSTeamsResource
from dagster_msteams.adaptive_card import AdaptiveCard
from dagster_slack import SlackResource
from pydantic import Field
from slack_sdk.errors import SlackApiError

from canvas_assets.alerts.messages import Alert

WEBHOOK, SLACK, TEAMS, EMAIL = "webhook", "slack", "msteams", "email"


class ChannelRefused(Exception):
    """A channel did not take an alert (its message is one line, and holds no secret)."""


class AlertChannels(dg.ConfigurableResource):
    """Where alerts go. A channel whose fields are unset is not configured."""

    webhook_url: str | None = Field(None, description="dg.EnvVar('CANVAS_ALERT_WEBHOOK_URL').")
    slack_token: str | None = Field(None, description="dg.EnvVar('CANVAS_ALERT_SLACK_TOKEN').")
    slack_channel: str | None = Field(None, description="CANVAS_ALERT_SLACK_CHANNEL.")
    slack_api_url: str = Field("https://slack.com/api", description="CANVAS_ALERT_SLACK_API_URL.")
    teams_webhook_url: str | None = Field(
        None, description="dg.EnvVar('CANVAS_ALERT_TEAMS_WEBHOOK_URL')."
    )
    smtp_host: str | None = Field(None, description="CANVAS_ALERT_SMTP_HOST.")
    smtp_port: int = Field(587, description="CANVAS_ALERT_SMTP_PORT.")
    smtp_starttls: bool = Field(True, description="CANVAS_ALERT_SMTP_STARTTLS.")
    smtp_user: str | None = Field(None, description="CANVAS_ALERT_SMTP_USER.")
    smtp_password: str | None = Field(None, description="dg.EnvVar('CANVAS_ALERT_SMTP_PASSWORD').")
    email_from: str | None = Field(None, description="CANVAS_ALERT_EMAIL_FROM.")
    email_to: list[str] = Field(default_factory=list, description="CANVAS_ALERT_EMAIL_TO.")
    timeout_seconds: float = Field(10.0, description="How long one channel may take.")

    def configured(self) -> list[str]:
        on = {
            WEBHOOK: bool(self.webhook_url),
            SLACK: bool(self.slack_token and self.slack_channel),
            TEAMS: bool(self.teams_webhook_url),
            EMAIL: bool(self.smtp_host and self.email_from and self.email_to),
        }
        return [channel for channel, configured in on.items() if configured]

    def secrets(self) -> list[str | None]:
        """The values no alert may show (the redactor hides them)."""
        return [self.webhook_url, self.slack_token, self.teams_webhook_url, self.smtp_password]

    def send(self, channel: str, alert: Alert) -> None:
        senders = {
            WEBHOOK: self._webhook,
            SLACK: self._slack,
            TEAMS: self._teams,
            EMAIL: self._email,
        }
        senders[channel](alert)

    def _webhook(self, alert: Alert) -> None:
        try:
            answer = requests.post(
                str(self.webhook_url), json=alert.payload(), timeout=self.timeout_seconds
            )
        except requests.RequestException as exc:
            raise ChannelRefused(f"webhook unreachable ({type(exc).__name__})") from None
        if not answer.ok:
            raise ChannelRefused(f"webhook answered HTTP {answer.status_code}")

    def _slack(self, alert: Alert) -> None:
        client = SlackResource(token=str(self.slack_token)).get_client()
        # Slack's own address unless told otherwise (GovSlack, a proxy, a test's receiver).
        client.base_url = self.slack_api_url.rstrip("/") + "/"
        client.timeout = int(self.timeout_seconds)
        try:
            client.chat_postMessage(channel=str(self.slack_channel), text=alert.text())
        except SlackApiError as exc:
            raise ChannelRefused(f"Slack refused: {exc.response.get('error')}") from None
        except Exception as exc:  # slack_sdk's transport errors vary by version
            raise ChannelRefused(f"Slack unreachable ({type(exc).__name__})") from None

    def _teams(self, alert: Alert) -> None:
        card = AdaptiveCard()
        card.add_attachment(text_message=alert.text())
        teams = MSTeamsResource(hook_url=str(self.teams_webhook_url), timeout=self.timeout_seconds)
        try:
            teams.get_client().post_message(payload=card.payload)
        except requests.RequestException as exc:
            status = getattr(exc.response, "status_code", None)
            why = f"HTTP {status}" if status else type(exc).__name__
            raise ChannelRefused(f"Teams refused ({why})") from None

    def _email(self, alert: Alert) -> None:
        message = EmailMessage()
        message["Subject"] = alert.title
        message["From"] = str(self.email_from)
        message["To"] = ", ".join(self.email_to)
        message.set_content(alert.text() + "\n")
        try:
            with smtplib.SMTP(
                str(self.smtp_host), self.smtp_port, timeout=self.timeout_seconds
            ) as smtp:
                if self.smtp_starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if self.smtp_user:
                    smtp.login(self.smtp_user, str(self.smtp_password))
                smtp.send_message(message)
        except smtplib.SMTPResponseException as exc:
            raise ChannelRefused(f"SMTP refused ({exc.smtp_code})") from None
        except (smtplib.SMTPException, OSError) as exc:
            raise ChannelRefused(f"SMTP unreachable ({type(exc).__name__})") from None
