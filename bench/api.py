"""Benchmark: the push-message API under gunicorn, against a bare Django JSON view.

    python bench/api.py [--messages 200000] [--seconds 10] [--rounds 5] [--connections 4]
                        [--workers 2] [--threads 4] [--port 8765]

What it does:
1. (Re)creates the PostgreSQL database `incentive_bench_api` on the server of BENCH_DATABASE_URL
   (default postgres://postgres@127.0.0.1:5432/incentive_bench_api), migrates it and loads
   `--messages` push messages (advertisers, tasks, ledger, messages) with set-based SQL, all
   leased to the benchmark key's consumer (events count only from the lease's consumer).
2. Starts gunicorn (gthread workers) on 127.0.0.1 serving this module as the WSGI app: the
   whole project plus a bare Django JSON view at /bench/bare, same middleware, same process.
3. Runs a bounded closed loop per endpoint: `--connections` client processes, each with one
   keep-alive HTTP/1.1 connection, `--seconds` per endpoint in all, split into `--rounds`
   interleaved rounds (bare, feed, events, batch, bare, ...) so that load from other programs on
   the machine falls on every endpoint alike; each round starts with a half-second warm-up.
   - bare:   GET  /bench/bare
   - feed:   GET  /api/v1/messages?page_size=100&status=all, following `next` (a page of 100)
   - events: POST /api/v1/messages/<id>/events {"type": "delivered"}, a fresh Idempotency-Key
             and a different message each time (every request moves a task and is stored)
   - batch:  POST /api/v1/messages/events with 500 events: `delivered` and `opened` for each of
             250 messages, every event with a fresh key (the first half of the messages goes to
             `events`, the second half to `batch`; a client that runs out of its messages starts
             over, and a repeated event is stored and answered but moves no task)
4. Prints requests/s, p50 and p99 latency per endpoint, the ratios to the bare view, events/s
   of the batch endpoint, and the targets: feed p99 < 50 ms, feed requests/s >= 0.3 x bare,
   batch >= 5,000 events/s.

The throttle stays on (at a rate the run cannot reach), so its cost is measured too.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import multiprocessing as mp
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlparse

from django.http import HttpRequest, JsonResponse

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_DB_URL = "postgres://postgres@127.0.0.1:5432/incentive_bench_api"
THROTTLE_RATE = "100000000/min"
BATCH_MESSAGES = 250  # x 2 events each: 500 events per batch request, the endpoint's maximum
BATCH_EVENTS_TARGET = 5000  # events/s
SERVE_FLAG = "BENCH_API_SERVE"  # set for gunicorn only: importing this module then serves it


def bare(request: HttpRequest) -> JsonResponse:
    """The baseline: Django's request cycle and a JSON body, nothing else."""
    return JsonResponse({"ok": True, "items": []})


if os.environ.get(SERVE_FLAG) == "1":
    # Imported by gunicorn: the project's WSGI app with the bare view added to its URLs.
    from django.conf import settings
    from django.core.wsgi import get_wsgi_application
    from django.urls import include, path

    settings.ROOT_URLCONF = __name__
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"api_key": THROTTLE_RATE},
    }
    application = get_wsgi_application()
    urlpatterns = [path("bench/bare", bare), path("", include("incentive_platform.urls"))]


# --- set-up --------------------------------------------------------------------------------------


def bench_environment(db_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": db_url,
        "DJANGO_SETTINGS_MODULE": "incentive_platform.settings",
        "DEBUG": "0",
        "SECRET_KEY": secrets.token_urlsafe(40),
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "LOG_LEVEL": "WARNING",
        "DB_CONN_MAX_AGE": "600",
    }


def database_recreate(db_url: str) -> None:
    import psycopg

    parsed = urlparse(db_url)
    name = parsed.path.lstrip("/")
    admin_url = parsed._replace(path="/postgres").geturl()
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def data_load(messages: int) -> str:
    """Migrate, load `messages` pending messages with set-based SQL; returns an API key secret."""
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection, transaction
    from django.utils import timezone

    from advertisers.models import Advertiser, Scenario
    from campaigns.models import BudgetLedgerEntry, Campaign, IncentiveTask, PushMessage
    from campaigns.services import api_key_create, templates_default_ensure

    call_command("migrate", verbosity=0)
    template = templates_default_ensure()[0]
    scenario = Scenario.objects.create(
        code="search", name="Sponsored search", kind="search", launched_on="2020-01-01"
    )
    campaign = Campaign.objects.create(
        name="bench",
        model_kind="m2m",
        top_n=messages,
        budget=30 * messages,
        reserved=30 * messages,
        reward_cap=100,
        starts_at="2024-04-01T00:00:00Z",
        status=Campaign.Status.RUNNING,
    )
    tables = {
        "adv": Advertiser._meta.db_table,
        "task": IncentiveTask._meta.db_table,
        "msg": PushMessage._meta.db_table,
        "ledger": BudgetLedgerEntry._meta.db_table,
    }
    statements = [
        """INSERT INTO {adv} (advertiser_id, name, registered_on, business_scale,
                              main_category, star_level)
           SELECT 'B' || lpad(g::text, 7, '0'), 'Bench ' || g, DATE '2021-01-01', 1, 'bench', 0
           FROM generate_series(1, %(n)s) AS g""",
        """INSERT INTO {task} (campaign_id, advertiser_id, scenario_id, template_id, kind, target,
                               reward, predicted_activity, predicted_base, prediction_as_of,
                               valid_from, valid_until, state, progress, created_at,
                               selection_kind)
           SELECT %(campaign)s, a.id, %(scenario)s, %(template)s, 'spend_target', 300, 30, 0.5,
                  240, DATE '2024-03-31', DATE '2024-04-01', DATE '2024-04-07', 'created', 0, now(),
                  'p_inactive'
           FROM {adv} AS a ORDER BY a.id""",
        """INSERT INTO {ledger} (campaign_id, task_id, kind, amount, created_at)
           SELECT t.campaign_id, t.id, 'reserve', t.reward, now() FROM {task} AS t""",
        """INSERT INTO {msg} (task_id, advertiser_id, body, content, status, lease_owner,
                              created_at)
           SELECT t.id, t.advertiser_id, m.body,
                  json_build_object(
                      'task_id', t.id,
                      'created_at', to_char(now() AT TIME ZONE 'UTC',
                                            'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                      'advertiser_id', a.advertiser_id, 'kind', t.kind, 'scenario', 'search',
                      'target', '300.00', 'reward', '30.00', 'valid_from', '2024-04-01',
                      'valid_until', '2024-04-07', 'body', m.body)::text,
                  'pending', '', now()
           FROM {task} AS t
           JOIN {adv} AS a ON a.id = t.advertiser_id
           CROSS JOIN (SELECT 'Spend 300 in Sponsored search by 2024-04-07 and earn a 30 '
                              || 'coupon.' AS body) AS m
           ORDER BY t.id""",
    ]
    params = {"n": messages, "campaign": campaign.pk, "scenario": scenario.pk}
    params["template"] = template.pk
    with transaction.atomic(), connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement.format(**tables), params)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    api_key, secret = api_key_create(name="bench", scopes=["push", "ops"])
    PushMessage.objects.update(
        status=PushMessage.Status.LEASED,
        lease_owner="bench",
        lease_consumer_id=api_key.consumer_id,
        lease_expires_at=timezone.now() + timedelta(days=1),
    )
    connection.close()
    return secret


def gunicorn_start(env: dict[str, str], port: int, workers: int, threads: int) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "--pythonpath",
        str(BENCH_DIR),
        "--bind",
        f"127.0.0.1:{port}",
        "--worker-class",
        "gthread",
        "--workers",
        str(workers),
        "--threads",
        str(threads),
        "--keep-alive",
        "30",
        "--log-level",
        "warning",
        f"{Path(__file__).stem}:application",
    ]
    server = subprocess.Popen(command, env={**env, SERVE_FLAG: "1"}, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/bench/bare")
            if conn.getresponse().status == 200:
                return server
        except OSError:
            time.sleep(0.3)
    server.terminate()
    raise SystemExit("gunicorn did not answer within 60 s; see its output above.")


# --- load ----------------------------------------------------------------------------------------


def _client(kind: str, port: int, secret: str, ids: range, seconds: float, out: mp.Queue) -> None:
    """One closed-loop client on one keep-alive connection; puts its latencies (s) on `out`."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    auth = {"Authorization": f"Api-Key {secret}"}
    feed_start = "/api/v1/messages?page_size=100&status=all"
    next_feed, next_id = feed_start, itertools.cycle(ids)
    warm_until = time.monotonic() + 0.5
    stop = warm_until + seconds
    latencies, errors = [], 0
    while True:
        now = time.monotonic()
        if now >= stop:
            break
        if kind == "bare":
            method, url, body, headers = "GET", "/bench/bare", None, {}
        elif kind == "feed":
            method, url, body, headers = "GET", next_feed, None, auth
        elif kind == "batch":
            events = [
                {"message_id": message_id, "type": event_type, "idempotency_key": uuid.uuid4().hex}
                for message_id in itertools.islice(next_id, BATCH_MESSAGES)
                for event_type in ("delivered", "opened")
            ]
            body = json.dumps({"events": events}).encode()
            headers = {**auth, "Content-Type": "application/json"}
            method, url = "POST", "/api/v1/messages/events"
        else:
            body = b'{"type": "delivered"}'
            headers = {
                **auth,
                "Content-Type": "application/json",
                "Idempotency-Key": uuid.uuid4().hex,
            }
            method, url = "POST", f"/api/v1/messages/{next(next_id)}/events"
        started = time.perf_counter()
        conn.request(method, url, body=body, headers=headers)
        response = conn.getresponse()
        payload = response.read()
        elapsed = time.perf_counter() - started
        if response.status != 200:
            errors += 1
        elif kind == "batch":  # every event must have been taken
            errors += sum(r["status"] != 200 for r in json.loads(payload)["results"])
        elif kind == "feed":  # follow `next`; start over at the end of the feed
            page = json.loads(payload)
            link = urlparse(page["next"])
            next_feed = f"{link.path}?{link.query}" if page["has_more"] else feed_start
        if now >= warm_until:
            latencies.append(elapsed)
    out.put((latencies, errors))


def load_run(
    kind: str, port: int, secret: str, seconds: float, id_ranges: list[range]
) -> tuple[list[float], int]:
    """One closed-loop run, one client process per id range; (latencies, errors)."""
    out: mp.Queue = mp.Queue()
    clients = [
        mp.Process(target=_client, args=(kind, port, secret, ids, seconds, out))
        for ids in id_ranges
    ]
    for client in clients:
        client.start()
    results = [out.get() for _ in clients]
    for client in clients:
        client.join()
    return [x for lat, _ in results for x in lat], sum(e for _, e in results)


def load_rounds(args: argparse.Namespace, secret: str, kinds: tuple[str, ...]) -> list[dict]:
    """Interleave the endpoints in rounds, so background load on a shared machine hits each
    endpoint alike; every (round, client) of the event run gets messages of its own."""
    half = args.messages // 2  # events take the first half of the messages, batch the second
    slot = half // (args.connections * args.rounds)
    latencies: dict[str, list[float]] = {kind: [] for kind in kinds}
    errors = dict.fromkeys(kinds, 0)
    for r in range(args.rounds):
        for kind in kinds:
            first = 1 + r * args.connections * slot + (half if kind == "batch" else 0)
            ranges = [
                range(first + i * slot, first + (i + 1) * slot) for i in range(args.connections)
            ]
            lat, err = load_run(kind, args.port, secret, args.seconds / args.rounds, ranges)
            latencies[kind] += lat
            errors[kind] += err
    return [summary(kind, latencies[kind], errors[kind], args.seconds) for kind in kinds]


def summary(kind: str, latencies: list[float], errors: int, seconds: float) -> dict:
    latencies = sorted(latencies)

    def pct(p: float) -> float:
        return (
            latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000 if latencies else 0
        )

    return {
        "endpoint": kind,
        "requests": len(latencies),
        "errors": errors,
        "rps": len(latencies) / seconds,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
    }


def report(rows: list[dict]) -> bool:
    bare_rps = next(r["rps"] for r in rows if r["endpoint"] == "bare")
    print(
        f"\n{'endpoint':<8} {'requests':>9} {'errors':>7} {'req/s':>9} {'p50 ms':>8} "
        f"{'p99 ms':>8} {'x bare':>7}"
    )
    for r in rows:
        print(
            f"{r['endpoint']:<8} {r['requests']:>9} {r['errors']:>7} {r['rps']:>9.1f} "
            f"{r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['rps'] / bare_rps:>7.2f}"
        )
    feed = next(r for r in rows if r["endpoint"] == "feed")
    p99_ok, ratio_ok = feed["p99_ms"] < 50, feed["rps"] >= 0.3 * bare_rps
    print(f"\ntarget feed p99 < 50 ms: {'met' if p99_ok else 'MISSED'} ({feed['p99_ms']:.2f} ms)")
    print(
        f"target feed >= 0.3 x bare req/s: {'met' if ratio_ok else 'MISSED'} "
        f"({feed['rps'] / bare_rps:.2f} x)"
    )
    batch = next(r for r in rows if r["endpoint"] == "batch")
    events_per_s = batch["rps"] * BATCH_MESSAGES * 2
    events_ok = events_per_s >= BATCH_EVENTS_TARGET
    print(
        f"batch events: {events_per_s:,.0f} events/s ({BATCH_MESSAGES * 2} per request; "
        f"single events endpoint {next(r['rps'] for r in rows if r['endpoint'] == 'events'):,.0f}"
        f"/s; bare view {bare_rps:,.0f} req/s, {events_per_s / bare_rps:.2f} events per bare "
        "request)"
    )
    print(f"target batch >= {BATCH_EVENTS_TARGET:,} events/s: {'met' if events_ok else 'MISSED'}")
    return p99_ok and ratio_ok and events_ok and not any(r["errors"] for r in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--seconds", type=float, default=10.0, help="Per endpoint, all rounds.")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()

    env = bench_environment(os.environ.get("BENCH_DATABASE_URL", DEFAULT_DB_URL))
    os.environ.update(env)
    started = time.monotonic()
    database_recreate(env["DATABASE_URL"])
    secret = data_load(args.messages)
    print(f"loaded {args.messages} pending messages in {time.monotonic() - started:.1f} s")
    server = gunicorn_start(env, args.port, args.workers, args.threads)
    try:
        print(
            f"gunicorn: {args.workers} gthread workers x {args.threads} threads; "
            f"{args.connections} keep-alive client connections, {args.seconds:.0f} s per endpoint "
            f"in {args.rounds} interleaved rounds"
        )
        rows = load_rounds(args, secret, ("bare", "feed", "events", "batch"))
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    sys.exit(0 if report(rows) else 1)


if __name__ == "__main__":
    main()
