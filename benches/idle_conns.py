#!/usr/bin/env python3
"""Hold many idle HTTP/1.1 keep-alive connections open, for benches/compare.sh.

Opens N connections to HOST:PORT, sends one GET on each and reads its answer
(so every connection went through a whole request), prints `READY <open>` and
then keeps them idle for HOLD seconds before closing them and exiting.

    python3 benches/idle_conns.py 127.0.0.1 8080 10000 /api/v2/services 20 [x-apikey]
"""

import asyncio
import resource
import sys


async def open_one(host, port, request):
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(request)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    await reader.readexactly(length)
    return writer


async def main():
    host, port, count, path, hold = sys.argv[1:6]
    key = sys.argv[6] if len(sys.argv) > 6 else None
    count, hold = int(count), float(hold)

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = count + 256
    if hard != resource.RLIM_INFINITY and hard < wanted:
        sys.exit(f"idle_conns: need {wanted} file descriptors, hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))

    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n"
    if key:
        request += f"x-apikey: {key}\r\n"
    request = (request + "\r\n").encode()

    writers, failed = [], 0
    batch = 500
    for start in range(0, count, batch):
        size = min(batch, count - start)
        tasks = [open_one(host, int(port), request) for _ in range(size)]
        for result in await asyncio.gather(*tasks, return_exceptions=True):
            if isinstance(result, Exception):
                failed += 1
            else:
                writers.append(result)
    print(f"READY {len(writers)} failed {failed}", flush=True)

    await asyncio.sleep(hold)
    for writer in writers:
        writer.close()


asyncio.run(main())
