"""The SQS queue that Canvas Data Services publishes Live Events to."""

from __future__ import annotations

from dataclasses import dataclass

import boto3
import dagster as dg
from botocore.config import Config
from pydantic import Field


@dataclass(frozen=True)
class QueueMessage:
    message_id: str
    receipt_handle: str
    body: str


class SQSQueueResource(dg.ConfigurableResource):
    """A Live Events queue. boto3's own settings (AWS_ENDPOINT_URL_SQS, AWS_REGION, credentials,
    profiles, roles) apply unchanged when the fields are left unset. (Not dagster-aws's boto3
    resource base: importing dagster_aws costs every process that loads the code location, every
    run among them, about half a second.)"""

    queue_url: str | None = Field(
        default=None, description="Queue URL (CANVAS_LIVE_EVENTS_QUEUE_URL); unset disables."
    )
    region_name: str | None = Field(default=None, description="AWS region; unset: boto3's.")
    endpoint_url: str | None = Field(
        default=None, description="SQS endpoint; unset: boto3's (AWS_ENDPOINT_URL_SQS)."
    )
    aws_access_key_id: str | None = Field(default=None, description="Unset: boto3's chain.")
    aws_secret_access_key: str | None = Field(default=None, description="Unset: boto3's chain.")
    max_attempts: int = Field(default=5, description="boto3's attempts per call (standard mode).")

    def client(self):
        return boto3.session.Session().client(
            "sqs",
            region_name=self.region_name,
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.aws_access_key_id,
            aws_secret_access_key=self.aws_secret_access_key,
            config=Config(retries={"max_attempts": self.max_attempts, "mode": "standard"}),
        )

    def receive(
        self,
        client,
        wait_seconds: int,
        max_messages: int = 10,
        visibility_timeout: int | None = None,
    ) -> list[QueueMessage]:
        kwargs: dict = {
            "QueueUrl": self.queue_url,
            "MaxNumberOfMessages": max_messages,
            "WaitTimeSeconds": max(0, min(20, wait_seconds)),
            "MessageAttributeNames": ["All"],
        }
        if visibility_timeout is not None:
            kwargs["VisibilityTimeout"] = visibility_timeout
        response = client.receive_message(**kwargs)
        return [
            QueueMessage(m["MessageId"], m["ReceiptHandle"], m.get("Body", ""))
            for m in response.get("Messages", [])
        ]

    def delete(self, client, messages: list[QueueMessage]) -> int:
        """Delete landed messages; returns how many SQS refused (they will be redelivered and
        recognised as duplicates)."""
        failed = 0
        for start in range(0, len(messages), 10):
            chunk = messages[start : start + 10]
            response = client.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m.receipt_handle} for i, m in enumerate(chunk)
                ],
            )
            failed += len(response.get("Failed", []))
        return failed
