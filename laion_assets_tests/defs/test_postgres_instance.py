"""deploy/dagster-postgres.yaml on a real PostgreSQL: four concurrent runs, queued by the daemon, share the gpu pool.

A throwaway server (initdb/pg_ctl, run as the `postgres` user when we are root) listens on 127.0.0.1 on a free port;
the instance reads its credentials from the environment as the file says. The runs come from a tiny code location
(``pool_runs.py``) whose `embedded` step holds the `gpu` pool, launched for real: the queued run coordinator, the
`dagster-daemon` process, one run process per run.
"""

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import psycopg2
import pytest
import yaml
from dagster._cli.job import _create_run
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import WorkspaceFileTarget

from laion_assets.core.paths import PROJECT_DIR
from laion_assets_tests.defs import pool_runs
from laion_assets_tests.processes import terminate_group

DEPLOY_YAML = PROJECT_DIR / "deploy" / "dagster-postgres.yaml"
INSTALL_HINT = "no PostgreSQL server binaries (initdb, pg_ctl): run scripts/install-postgresql.sh"
RUNS_TIMEOUT_S = 90.0


def postgres_bin_dir() -> Path | None:
    """The folder holding initdb and pg_ctl: on PATH, else Debian's newest /usr/lib/postgresql/*/bin."""
    on_path = shutil.which("initdb")
    if on_path:
        return Path(os.path.realpath(on_path)).parent
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(found[-1]).parent if found else None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres() -> Iterator[dict[str, str]]:
    """A PostgreSQL server with a `dagster` database; yields the LAION_ASSETS_PG_* variables that reach it."""
    bin_dir = postgres_bin_dir()
    if bin_dir is None or not (bin_dir / "pg_ctl").exists():
        pytest.skip(INSTALL_HINT)
    as_user: list[str] = []
    owner = None
    if os.geteuid() == 0:  # initdb refuses root: run the server as the `postgres` user the package creates
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip(f"running as root and no `postgres` user to run the server as: {INSTALL_HINT}")
        as_user = ["runuser", "-u", "postgres", "--"]
    root = Path(tempfile.mkdtemp(prefix="laion-pg-"))
    data, log = root / "data", root / "server.log"
    user, password, port = "laion", secrets.token_hex(16), free_port()
    pwfile = root / "pwfile"
    pwfile.write_text(password + "\n")
    if owner is not None:
        os.chown(root, owner.pw_uid, owner.pw_gid)
        os.chown(pwfile, owner.pw_uid, owner.pw_gid)
    pg_ctl = [*as_user, str(bin_dir / "pg_ctl"), "-D", str(data)]
    try:
        subprocess.run([*as_user, str(bin_dir / "initdb"), "-D", str(data), "-U", user, f"--pwfile={pwfile}",
                        "--auth=scram-sha-256", "-E", "UTF8", "--no-sync", "--no-instructions"],
                       check=True, capture_output=True)  # fmt: skip
        pwfile.unlink()
        options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100"
        subprocess.run([*pg_ctl, "-o", options, "-l", str(log), "-w", "-t", "30", "start"], check=True,
                       capture_output=True)  # fmt: skip
        env = {"LAION_ASSETS_PG_USER": user, "LAION_ASSETS_PG_PASSWORD": password, "LAION_ASSETS_PG_HOST": "127.0.0.1",
               "LAION_ASSETS_PG_PORT": str(port), "LAION_ASSETS_PG_DB": "dagster"}  # fmt: skip
        conn = connect(env, dbname="postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("CREATE DATABASE dagster")
        conn.close()
        yield env
    except subprocess.CalledProcessError as error:
        server_log = log.read_text() if log.exists() else ""
        raise AssertionError(f"{error.cmd}: {error.stderr.decode()}\n{server_log}") from error
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run([*pg_ctl, "-m", "immediate", "-w", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def connect(env: dict[str, str], dbname: str | None = None) -> "psycopg2.extensions.connection":
    """A connection to the test server as the LAION_ASSETS_PG_* variables describe it (their database by default)."""
    return psycopg2.connect(host=env["LAION_ASSETS_PG_HOST"], port=int(env["LAION_ASSETS_PG_PORT"]),
                            user=env["LAION_ASSETS_PG_USER"], password=env["LAION_ASSETS_PG_PASSWORD"],
                            dbname=dbname or env["LAION_ASSETS_PG_DB"])  # fmt: skip


def intervals(instance: dg.DagsterInstance, asset: str) -> dict[str, tuple[float, float]]:
    """Per partition, the (start, end) an asset's step recorded in its materialization, as read from the instance."""
    records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset)), limit=100).records
    found = {}
    for record in records:
        event = record.asset_materialization
        assert event is not None and event.partition is not None, (event, record.partition_key)
        found[event.partition] = (event.metadata["start"].value, event.metadata["end"].value)
    return found


def test_four_runs_share_the_gpu_pool_on_postgres(
    postgres: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four runs at once on the PostgreSQL instance: all succeed, stored there, one `gpu` step at a time."""
    for name, value in postgres.items():
        monkeypatch.setenv(name, value)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    config = yaml.safe_load(DEPLOY_YAML.read_text())
    for storage in ("run_storage", "event_log_storage", "schedule_storage"):
        assert config[storage]["config"]["postgres_db"]["password"] == {"env": "LAION_ASSETS_PG_PASSWORD"}
    assert config["event_log_storage"]["class"] == "PoolSafePostgresEventLogStorage"
    assert config["concurrency"] == {"pools": {"default_limit": 1}, "runs": {"max_concurrent_runs": 4}}
    # The file as shipped, except that the daemon looks at the queue every second (not every 5 s): a quicker test.
    config["run_coordinator"]["config"] = {"dequeue_interval_seconds": 1}
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    workspace = home / "workspace.yaml"
    location = {
        "relative_path": pool_runs.__file__,
        "working_directory": str(PROJECT_DIR),
        "location_name": "pool_runs",
    }
    workspace.write_text(yaml.safe_dump({"load_from": [{"python_file": location}]}))
    barrier = tmp_path / "barrier"
    barrier.mkdir()

    daemon_log = (tmp_path / "daemon.log").open("wb")
    daemon = subprocess.Popen([str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", str(workspace)],
                              stdout=daemon_log, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        with dg.DagsterInstance.from_config(str(home)) as instance:
            # The gpu pool's own limit, set the way the README says (`dagster instance concurrency set gpu 1`).
            instance.event_log_storage.set_concurrency_slots("gpu", 1)
            assert instance.event_log_storage.get_concurrency_info("gpu").slot_count == 1
            with WorkspaceProcessContext(instance, WorkspaceFileTarget([str(workspace)])) as process_context:
                context = process_context.create_request_context()
                code_location = context.get_code_location("pool_runs")
                repo = next(iter(code_location.get_repositories().values()))
                remote_job = repo.get_full_job("shard_job")
                run_config = {"ops": {"prepared": {"config": {"barrier_dir": str(barrier)}}}}
                run_ids = []
                for shard in pool_runs.SHARDS.get_partition_keys():
                    run = _create_run(instance=instance, code_location=code_location, remote_repo=repo,
                                      remote_job=remote_job, run_config=run_config,
                                      tags={"dagster/partition": shard}, op_selection=None, run_id=None)  # fmt: skip
                    instance.submit_run(run.run_id, context)
                    run_ids.append(run.run_id)
            deadline = time.time() + RUNS_TIMEOUT_S
            while True:
                runs = [instance.get_run_by_id(run_id) for run_id in run_ids]
                if all(run is not None and run.is_finished for run in runs) or time.time() > deadline:
                    break
                time.sleep(0.5)
            statuses = {run.tags["dagster/partition"]: run.status for run in runs if run is not None}
            if statuses != dict.fromkeys(pool_runs.SHARDS.get_partition_keys(), dg.DagsterRunStatus.SUCCESS):
                daemon_log.flush()
                errors = [e.message for run_id in run_ids for e in instance.all_logs(run_id) if e.is_error]
                log_tail = (tmp_path / "daemon.log").read_text()[-4000:]
                raise AssertionError(f"runs: {statuses}\nerrors: {errors}\ndaemon log: {log_tail}")

            # Stored in PostgreSQL: the instance's storage is it, and the run and event tables there hold the runs.
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            assert type(instance.event_log_storage).__name__ == "PoolSafePostgresEventLogStorage"
            conn = connect(postgres)
            with conn, conn.cursor() as cur:
                cur.execute("SELECT run_id, status FROM runs WHERE run_id = ANY(%s)", (run_ids,))
                assert dict(cur.fetchall()) == dict.fromkeys(run_ids, "SUCCESS")
                cur.execute("SELECT count(*) FROM event_logs WHERE run_id = ANY(%s) AND dagster_event_type = "
                            "'ASSET_MATERIALIZATION'", (run_ids,))  # fmt: skip
                assert cur.fetchone() == (8,)  # two assets, four shards
            conn.close()
            assert not list(home.rglob("*.db")), "no SQLite storage next to the PostgreSQL instance"

            prepared, embedded = intervals(instance, "prepared"), intervals(instance, "embedded")
            assert set(prepared) == set(embedded) == set(pool_runs.SHARDS.get_partition_keys())
            # The runs really ran at once: every `prepared` step was in flight while each other one was.
            assert max(start for start, _ in prepared.values()) < min(end for _, end in prepared.values())
            # The gpu pool (limit 1) never had two steps in flight: the `embedded` steps ran one after another...
            ordered = sorted(embedded.values())
            for (_, end), (next_start, _) in zip(ordered, ordered[1:], strict=False):
                assert end <= next_start, f"two gpu steps overlapped: {ordered}"
            # ...though all four were ready about together: at least one waited for the slot well past its readiness.
            waits = {shard: embedded[shard][0] - prepared[shard][1] for shard in embedded}
            assert max(waits.values()) >= 2 * pool_runs.GPU_SECONDS, waits
            info = instance.event_log_storage.get_concurrency_info("gpu")
            assert info.slot_count == 1 and info.claimed_slots == [] and info.pending_steps == []
    finally:
        terminate_group(daemon)
        daemon_log.close()


def test_our_embedding_step_is_in_the_gpu_pool() -> None:
    """The pool the instance file and README limit is the one our image-embedding step runs in."""
    from laion_assets.definitions import defs

    assert defs.resolve_assets_def("image_embeddings").op.pool == "gpu"


def test_our_shard_job_runs_on_the_postgres_instance(
    postgres: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small_sample_session: Path
) -> None:
    """Our own shard_job (dynamic shard partitions, scores, their checks) stored on the PostgreSQL instance."""
    from laion_assets.definitions import build_defs, register_shards, shard_job
    from laion_assets.defs.resources import StorageResource

    for name, value in postgres.items():
        monkeypatch.setenv(name, value)
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(DEPLOY_YAML, home / "dagster.yaml")  # the file exactly as shipped
    with dg.DagsterInstance.from_config(str(home)) as instance:
        storage = StorageResource(source=str(small_sample_session), data_root=str(tmp_path / "out"))
        keys = register_shards(instance, storage.shard_source)
        job = build_defs({"storage": storage}).resolve_job_def(shard_job.name)
        selection = [dg.AssetKey("clip_embeddings"), dg.AssetKey("aesthetic_scores")]
        for key in keys:
            result = job.execute_in_process(instance=instance, partition_key=key, asset_selection=selection)
            assert result.success
        assert sorted(instance.get_dynamic_partitions("shards")) == keys == ["00000", "00001", "00002"]
        scores = instance.fetch_materializations(dg.AssetKey("aesthetic_scores"), limit=10).records
        assert sorted(r.partition_key for r in scores) == keys
        assert type(instance.event_log_storage).__name__ == "PoolSafePostgresEventLogStorage"
        assert not list(home.rglob("*.db"))


def test_a_free_gpu_slot_is_claimed_by_one_step_only(postgres: dict[str, str], tmp_path: Path, monkeypatch) -> None:
    """Eight workers ask for the one `gpu` slot at the same moment, fifty times over: each time exactly one gets it."""
    import threading

    from dagster._utils.concurrency import ConcurrencySlotStatus

    for name, value in postgres.items():
        monkeypatch.setenv(name, value)
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(DEPLOY_YAML, home / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        storage = instance.event_log_storage
        storage.set_concurrency_slots("race", 1)
        for round_ in range(50):
            start = threading.Barrier(8)
            won: list[str] = []

            def claim(step: str, round_: int = round_, start: threading.Barrier = start, won: list[str] = won) -> None:
                start.wait()
                if storage._claim_concurrency_slot("race", f"run-{round_}", step) == ConcurrencySlotStatus.CLAIMED:
                    won.append(step)

            workers = [threading.Thread(target=claim, args=(f"step-{i}",)) for i in range(8)]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
            assert len(won) == 1, f"round {round_}: {won} all claimed the one slot"
            storage.free_concurrency_slots_for_run(f"run-{round_}")
