#!/usr/bin/env python3
"""The HTTP server bench/whole-path.sh measures every path against (one asyncio thread, HTTP/1.1).

    GET /small      -> 200 "ok\n" (keep-alive, or closed after the answer when the request says Connection: close)
    GET /bytes/N    -> 200 with N bytes (a 1 MiB random block repeated), for the curl of 1 GiB

It holds any number of idle connections (the 1,000 idle flows). Usage: whole-path-server.py ADDRESS PORT
"""
import asyncio
import random
import socket
import sys

BLOCK = random.Random(7).randbytes(1 << 20)


async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, version = (lines[0].split(" ") + ["", "", ""])[:3]
            close = version == "HTTP/1.0" or any(
                line.lower().replace(" ", "") == "connection:close" for line in lines[1:])
            trailer = b"Connection: close\r\n" if close else b""
            if method == "GET" and path.startswith("/bytes/"):
                size = int(path[len("/bytes/"):])
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n%s\r\n"
                             % (size, trailer))
                sent = 0
                view = memoryview(BLOCK)
                while sent < size:
                    piece = min(len(BLOCK), size - sent)
                    writer.write(view[:piece])
                    sent += piece
                    await writer.drain()
            elif method == "GET":
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n%s\r\nok\n" % trailer)
            else:
                writer.write(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                close = True
            await writer.drain()
            if close:
                break
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
        pass
    finally:
        writer.close()


async def main() -> None:
    server = await asyncio.start_server(serve, sys.argv[1], int(sys.argv[2]), backlog=4096, reuse_address=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
