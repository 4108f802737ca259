"""A vendor's deployment: institutions named in an institutions file, one shared Live Events
queue every institution's Canvas publishes to, and one code location serving them all. Real
parts throughout: moto's SQS server, a sandbox per institution over HTTP, PostgreSQL, the
sensor and apply job of the code location's own definitions."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import dagster as dg
import pytest
import yaml
from psycopg import sql

from canvas_assets.definitions import build_definitions
from canvas_assets.defs.namespace import Namespace
from canvas_assets.defs.resources import build_resources
from canvas_assets.settings import Settings
from canvas_sandbox import ChangeDriver, SandboxServer, generate_institution

from .conftest import SANDBOX_TOKEN
from .truth import expected_semester, semester_of, warehouse_semester

SHARD = 3001


@dataclass
class Site:
    """One partner institution: its sandbox (its own shard and root account uuid)."""

    name: str
    institution: object
    server: SandboxServer

    @property
    def uuid(self) -> str:
        return self.institution.root_account_uuid


class Vendor:
    """The deployment under test: the file, the settings and the code location's definitions."""

    def __init__(self, sites, queue, postgres_url, tmp_path, monkeypatch, declared=None):
        self.sites, self.queue, self.suffix = sites, queue, uuid.uuid4().hex[:6]
        self.tmp_path, self.monkeypatch, self.postgres_url = tmp_path, monkeypatch, postgres_url
        monkeypatch.setenv("CANVAS_WAREHOUSE_URL", postgres_url)
        monkeypatch.setenv("CANVAS_LIVE_EVENTS_QUEUE_URL", queue.queue_url)
        monkeypatch.setenv("CANVAS_SHARED_SCHEMA", f"shared_{self.suffix}")
        monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", queue.endpoint_url)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", queue.aws_access_key_id)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", queue.aws_secret_access_key)
        monkeypatch.setenv("AWS_REGION", "us-east-1")
        self.declare(declared if declared is not None else sites)

    def declare(self, sites: list[Site]) -> None:
        """Write the institutions file (a vendor adds an entry and its secret) and load it."""
        entries = []
        for site in sites:
            token_env = f"{site.name.upper()}_CANVAS_TOKEN"
            self.monkeypatch.setenv(token_env, SANDBOX_TOKEN)
            entries.append(
                {"name": site.name, "base_url": site.server.url, "root_account_uuid": site.uuid,
                 "token_env": token_env, "schema": f"{site.name}_{self.suffix}"}
            )  # fmt: skip
        path = self.tmp_path / "institutions.yaml"
        path.write_text(yaml.safe_dump({"institutions": entries}))
        self.monkeypatch.setenv("CANVAS_INSTITUTIONS_FILE", str(path))
        self.settings = Settings.from_env()
        self.defs = build_definitions(self.settings)
        self.resources = build_resources(self.settings)
        self.namespaces = {i.name: Namespace(i) for i in self.settings.institutions}

    def backfill(self, instance: dg.DagsterInstance, site: Site, semester: str) -> None:
        namespace = self.namespaces[site.name]
        instance.add_dynamic_partitions(namespace.partitions.name, [semester])
        job = self.defs.resolve_job_def(namespace.semester_job)
        assert job.execute_in_process(partition_key=semester, instance=instance).success

    def tick_and_apply(self, instance: dg.DagsterInstance) -> list[dg.ExecuteInProcessResult]:
        """One sensor tick, then the runs it requested, as the daemon would launch them."""
        sensor = self.defs.get_sensor_def("canvas_live_events")
        context = dg.build_sensor_context(instance=instance, resources=self.resources)
        result = sensor(context)
        job = self.defs.resolve_job_def("canvas_live_events_apply")
        return [
            job.execute_in_process(
                run_config=request.run_config, instance=instance, raise_on_error=False,
                tags={**request.tags, "dagster/run_key": request.run_key},
            )
            for request in result.run_requests
        ]  # fmt: skip

    def schema(self, site: Site) -> str:
        return f"{site.name}_{self.suffix}"

    def drop(self, db) -> None:
        for schema in [*(self.schema(s) for s in self.sites), f"shared_{self.suffix}"]:
            db.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture
def sites():
    """Three institutions with the same seed: the same local ids (as partners on different
    Canvas shards have), their own shards and root account uuids."""
    started = []
    for index, name in enumerate(("north", "south", "east")):
        institution = generate_institution("small", seed=7, shard_id=SHARD + index)
        started.append(
            Site(name, institution, SandboxServer(institution, token=SANDBOX_TOKEN).start())
        )
    yield started
    for site in started:
        site.server.stop()


def _events_by_institution(db, vendor: Vendor) -> dict[str, int]:
    counts = {}
    for site in vendor.sites:
        row = db.execute(
            sql.SQL("SELECT count(*) FROM {}.live_events WHERE event_key NOT LIKE '%%:%%'").format(
                sql.Identifier(vendor.schema(site))
            )
        ).fetchone()
        counts[site.name] = row[0]
    return counts


def _converged(db, vendor: Vendor, site: Site, semester: str) -> bool:
    expected = expected_semester(site.institution, semester)
    return warehouse_semester(db, vendor.schema(site), semester) == expected


def _first_semester(site: Site) -> str:
    return sorted(semester_of(t) for t in site.institution.terms.values() if t["sis_term_id"])[0]


def test_three_institutions_on_one_queue_each_get_their_own_events_and_no_one_elses(
    sites, queue, postgres_url, tmp_path, monkeypatch, db
) -> None:
    """Without this, institutions sharing the vendor's queue would lose each other's events
    (each code location took every message as its own), or, their ids repeating across
    shards, apply one college's changes to another's rows."""
    vendor = Vendor(sites, queue, postgres_url, tmp_path, monkeypatch)
    semester = _first_semester(sites[0])
    # The same local ids in every institution: an event routed by its ids alone would go
    # astray, and the changes below (different in each) would then show in the wrong one.
    north, south = (expected_semester(s.institution, semester) for s in sites[:2])
    assert north["courses"].keys() == south["courses"].keys()
    sent: dict[str, int] = {}
    try:
        with dg.instance_for_test() as instance:
            for site in sites:
                vendor.backfill(instance, site, semester)
            for index, site in enumerate(sites):
                driver = ChangeDriver(
                    site.institution, queue.client(), queue.queue_url, seed=40 + index,
                    follow_wall_clock=True,
                )  # fmt: skip
                driver.run(12)
                driver.flush()
                sent[site.name] = len({str(e) for e in driver.sent})
            for _ in range(6):
                runs = vendor.tick_and_apply(instance)
                if not runs:
                    break
                assert all(run.success for run in runs)
        assert _events_by_institution(db, vendor) == sent  # each lands once, in its own
        for site in sites:
            assert _converged(db, vendor, site, semester), site.name
    finally:
        vendor.drop(db)


def test_an_unknown_institutions_events_are_kept_and_applied_once_it_is_declared(
    sites, queue, postgres_url, tmp_path, monkeypatch, db
) -> None:
    """Without this, a partner whose Canvas publishes before the vendor declares it would lose
    those events, or have them applied to another institution."""
    north, south = sites[:2]
    vendor = Vendor(sites[:2], queue, postgres_url, tmp_path, monkeypatch, declared=[north])
    semester = _first_semester(north)
    try:
        with dg.instance_for_test() as instance:
            vendor.backfill(instance, north, semester)
            driver = ChangeDriver(
                south.institution, queue.client(), queue.queue_url, seed=5, follow_wall_clock=True
            )
            driver.run(8)
            driver.flush()
            vendor.tick_and_apply(instance)
            shared = f"shared_{vendor.suffix}"
            kept = db.execute(
                sql.SQL(
                    "SELECT count(*), min(reason) FROM {}.live_event_quarantine "
                    "WHERE replayed_at IS NULL"
                ).format(sql.Identifier(shared))
            ).fetchone()
            assert kept[0] == len(driver.sent)  # kept, every one
            assert kept[1] == f"unknown institution {south.uuid}"
            sensor = vendor.defs.get_sensor_def("canvas_live_events")
            tick = sensor(dg.build_sensor_context(instance=instance, resources=vendor.resources))
            unknown = [
                e for e in tick.asset_events
                if isinstance(e, dg.AssetCheckEvaluation) and e.check_name == "unknown_institutions"
            ]  # fmt: skip
            assert unknown and not unknown[-1].passed  # the stream's health shows them

            vendor.declare(sites[:2])  # the vendor adds south: its entry and its token
            vendor.backfill(instance, south, semester)
            for _ in range(6):
                runs = vendor.tick_and_apply(instance)
                if not runs:
                    break
                assert all(run.success for run in runs)
        assert _events_by_institution(db, vendor)["south"] == len(driver.sent)
        assert _events_by_institution(db, vendor)["north"] == 0  # never applied elsewhere
        assert _converged(db, vendor, south, semester) and _converged(db, vendor, north, semester)
    finally:
        vendor.drop(db)


def test_one_institutions_canvas_down_does_not_delay_the_others(
    sites, queue, postgres_url, tmp_path, monkeypatch, db
) -> None:
    """Without this, one partner's Canvas outage (or revoked token) would fail the runs it
    shares with the others, or hold their events back until it recovered."""
    vendor = Vendor(sites, queue, postgres_url, tmp_path, monkeypatch)
    semester = _first_semester(sites[0])
    down = sites[1]
    try:
        with dg.instance_for_test() as instance:
            for site in sites:
                vendor.backfill(instance, site, semester)
            down.server.faults.error_rate = 1.0  # south's Canvas stops answering
            for round_number in range(3):
                for index, site in enumerate(sites):
                    driver = ChangeDriver(
                        site.institution, queue.client(), queue.queue_url,
                        seed=round_number * 10 + index, follow_wall_clock=True,
                    )  # fmt: skip
                    driver.run(4)
                    driver.flush()
                runs = vendor.tick_and_apply(instance)
                for site in sites:
                    if site is not down:  # the others are current after every tick
                        assert _converged(db, vendor, site, semester), (round_number, site.name)
                labels = [r.dagster_run.run_config["ops"]["apply_live_events"]["config"]
                          ["institutions"] for r in runs]  # fmt: skip
                if round_number:  # once it failed, south is kept in runs of its own
                    assert ["south"] in labels and all(
                        "south" not in group for group in labels if group != ["south"]
                    )
                    assert all(
                        r.success
                        for r in runs
                        if r.dagster_run.run_config["ops"]["apply_live_events"]["config"][
                            "institutions"
                        ]
                        != ["south"]
                    )
            down.server.faults.error_rate = 0.0  # south is back
            for _ in range(6):
                if not vendor.tick_and_apply(instance):
                    break
        assert _converged(db, vendor, down, semester)  # nothing of south's was lost
    finally:
        vendor.drop(db)
