#!/usr/bin/env python3
"""Poll storm for benches/compare.sh: many clients polling many orders' status.

Buys ORDERS numbers straight from the simulator (from 127.0.0.20 and up, four
per source address, so that the set-up does not touch the gateway's budget),
then CLIENTS keep-alive clients each poll one order's
/api/v1/orders/get_status through the gateway every PERIOD seconds for
SECONDS. Once every order has been answered (the warm-up), every order's SMS
is delivered through the simulator's control API, one order per second, and
the time until a poller first sees each OTP is recorded.

Prints one JSON object: the warm-up (until every order has been answered
once) and the measured part after it: answers by status and x-cache, the age
of the statuses clients saw, upstream get_status calls per second against the
budget, the simulator's window violations and blocks, the gateway's CPU and
RSS, and the OTP delays.

    python3 benches/poll_storm.py GATEWAY_PORT SIM_PORT GATEWAY_PID KEY \
        ORDERS CLIENTS PERIOD SECONDS PACING_PERIOD

Loopback only: everything goes to 127.0.0.1 (set-up calls leave from other
127.0.0.0/8 addresses).
"""

import asyncio
import json
import os
import random
import statistics
import sys
import time

HOST = "127.0.0.1"


async def http(host, port, method, path, headers=None, body=b"", local=None):
    """One request on a fresh connection; returns (status, headers, body)."""
    reader, writer = await asyncio.open_connection(
        host, port, local_addr=(local, 0) if local else None
    )
    try:
        writer.write(request_bytes(method, path, headers or {}, body, close=True))
        await writer.drain()
        return await read_answer(reader)
    finally:
        writer.close()


def request_bytes(method, path, headers, body=b"", close=False):
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines.append(f"Content-Length: {len(body)}")
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def read_answer(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, body


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def sim_stats(sim_port):
    _, _, body = await http(HOST, sim_port, "GET", "/__sim/stats")
    return json.loads(body)


async def status_calls(sim_port):
    _, _, body = await http(HOST, sim_port, "GET", "/__sim/requests")
    return sum(
        1 for r in json.loads(body)["requests"] if r["ip"] == HOST and r["path"].endswith("/get_status")
    )


async def buy_orders(sim_port, key, count):
    """Buys `count` orders directly from the simulator, four per source address."""
    _, _, body = await http(
        HOST, sim_port, "GET", "/api/v2/countries?service_id=13",
        {"x-apikey": key}, local="127.0.0.19",
    )
    offers = []
    for country in json.loads(body)["data"]:
        for price in country.get("pricelist", []):
            if price.get("available") and price.get("stock", 0) > 0:
                offers += [(country["number_id"], price["provider_id"])] * min(price["stock"], 20)
    if len(offers) < count:
        raise SystemExit(f"the simulator offers only {len(offers)} numbers")
    ids = []
    for i in range(count):
        number_id, provider_id = offers[i]
        path = f"/api/v2/orders?number_id={number_id}&provider_id={provider_id}&operator_id=1"
        local = f"127.0.0.{20 + i // 4}"
        status, _, body = await http(HOST, sim_port, "GET", path, {"x-apikey": key}, local=local)
        answer = json.loads(body)
        if status != 200 or not answer.get("success"):
            raise SystemExit(f"buying order {i} failed: {status} {body[:200]!r}")
        ids.append(answer["data"]["order_id"])
    return ids


class Tally:
    def __init__(self, orders):
        self.answers = []  # (time, order, status, cache, age)
        self.first_ok = {}  # order -> time
        self.otp_seen = {}  # order -> time


async def poller(port, key, order, period, until, tally, first_delay):
    path = f"/api/v1/orders/get_status?order_id={order}"
    request = request_bytes("GET", path, {"x-apikey": key})
    await asyncio.sleep(first_delay)
    reader = writer = None
    while time.monotonic() < until:
        started = time.monotonic()
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(HOST, port)
            writer.write(request)
            await writer.drain()
            status, headers, body = await read_answer(reader)
        except (OSError, asyncio.IncompleteReadError):
            tally.answers.append((started, order, 0, "", None))
            writer = None
            await asyncio.sleep(period)
            continue
        cache = headers.get("x-cache", "")
        age = int(headers["age"]) if "age" in headers else None
        tally.answers.append((started, order, status, cache, age))
        if status == 200:
            tally.first_ok.setdefault(order, time.monotonic())
            data = json.loads(body).get("data") or {}
            if data.get("otp_code", "-") != "-":
                tally.otp_seen.setdefault(order, time.monotonic())
        await asyncio.sleep(max(0.0, period - (time.monotonic() - started)))
    if writer is not None:
        writer.close()


def percentile(values, fraction):
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(fraction * len(values)))]


async def main():
    (gw_port, sim_port, gw_pid, key, orders, clients, period, seconds, pacing) = sys.argv[1:10]
    gw_port, sim_port, gw_pid = int(gw_port), int(sim_port), int(gw_pid)
    orders, clients, period, seconds = int(orders), int(clients), float(period), float(seconds)
    pacing = float(pacing)

    ids = await buy_orders(sim_port, key, orders)
    await asyncio.sleep(12)  # the set-up addresses' windows do not matter, but be tidy

    tally = Tally(ids)
    began = time.monotonic()
    until = began + seconds
    calls_at_start = await status_calls(sim_port)
    tasks = [
        asyncio.create_task(
            poller(gw_port, key, ids[c % orders], period, until, tally, random.uniform(0, period))
        )
        for c in range(clients)
    ]

    # Warm-up ends when every order has been answered once.
    while len(tally.first_ok) < orders and time.monotonic() < until:
        await asyncio.sleep(0.5)
    warm = time.monotonic()
    warm_calls = await status_calls(sim_port)
    cpu_warm = cpu_seconds(gw_pid)
    measured = until - warm
    if measured < 4 * period:
        raise SystemExit(f"warm-up took {warm - began:.0f} s of {seconds:.0f}: raise SECONDS")

    # Then deliver every SMS, one a second.
    sms_at = {}
    for order in ids:
        if time.monotonic() >= until - 1:
            break
        await http(HOST, sim_port, "POST", f"/__sim/orders/{order}/sms", local="127.0.0.19")
        sms_at[order] = time.monotonic()
        await asyncio.sleep(min(1.0, (until - time.monotonic()) / orders))
    await asyncio.gather(*tasks)
    ended = time.monotonic()
    cpu_end = cpu_seconds(gw_pid)
    end_calls = await status_calls(sim_port)
    stats = await sim_stats(sim_port)

    steady = [a for a in tally.answers if a[0] >= warm]
    warmup = [a for a in tally.answers if a[0] < warm]
    by_status, by_cache = {}, {}
    for _, _, status, cache, _ in steady:
        by_status[str(status)] = by_status.get(str(status), 0) + 1
        if status == 200:
            by_cache[cache or "none"] = by_cache.get(cache or "none", 0) + 1
    ages = [a[4] for a in steady if a[2] == 200 and a[4] is not None]
    delays = [tally.otp_seen[o] - sms_at[o] for o in sms_at if o in tally.otp_seen]
    steady_seconds = ended - warm
    print(json.dumps({
        "orders": orders,
        "clients": clients,
        "period_s": period,
        "pacing_period_s": pacing,
        "warmup_s": round(warm - began, 1),
        "warmup_answers": len(warmup),
        "warmup_errors": sum(1 for a in warmup if a[2] != 200),
        "warmup_upstream_calls": warm_calls - calls_at_start,
        "steady_s": round(steady_seconds, 1),
        "steady_answers": len(steady),
        "steady_rps": round(len(steady) / steady_seconds, 1),
        "steady_by_status": by_status,
        "steady_by_cache": by_cache,
        "steady_upstream_calls": end_calls - warm_calls,
        "upstream_calls_per_s": round((end_calls - warm_calls) / steady_seconds, 3),
        "budget_calls_per_s": round(1 / pacing, 3),
        "age_median_s": percentile(ages, 0.5),
        "age_p90_s": percentile(ages, 0.9),
        "age_max_s": max(ages) if ages else None,
        "age_goal_s": round(orders * pacing, 1),
        "otp_delivered": len(sms_at),
        "otp_seen": len(delays),
        "otp_delay_median_s": round(statistics.median(delays), 1) if delays else None,
        "otp_delay_max_s": round(max(delays), 1) if delays else None,
        "window_violations": stats["window_violations"],
        "blocks": stats["blocks_total"],
        "gateway_cpu_percent": round(100 * (cpu_end - cpu_warm) / steady_seconds, 1),
        "gateway_rss_mib": round(rss_mib(gw_pid), 1),
    }))


if __name__ == "__main__":
    asyncio.run(main())
