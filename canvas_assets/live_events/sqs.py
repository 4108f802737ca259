"""The SQS queue that Canvas Data Services publishes Live Events to."""

from __future__ import annotations

from dataclasses import dataclass

import boto3
from botocore.config import Config
from dagster_aws.utils import ResourceWithBoto3Configuration
from pydantic import Field


@dataclass(frozen=True)
class QueueMessage:
    message_id: str
    receipt_handle: str
    body: str


class SQSQueueResource(ResourceWithBoto3Configuration):
    """A Live Events queue. boto3's own settings (AWS_ENDPOINT_URL_SQS, AWS_REGION, credentials)
    apply unchanged when the fields are left unset."""

    queue_url: str | None = Field(
        default=None, description="Queue URL (CANVAS_LIVE_EVENTS_QUEUE_URL); unset disables."
    )

    def client(self):
        session = boto3.session.Session(profile_name=self.profile_name)
        return session.client(
            "sqs",
            region_name=self.region_name,
            endpoint_url=self.endpoint_url,
            use_ssl=self.use_ssl,
            verify=self.verify,
            aws_access_key_id=self.aws_access_key_id,
            aws_secret_access_key=self.aws_secret_access_key,
            aws_session_token=self.aws_session_token,
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
