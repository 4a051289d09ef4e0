"""A TLS terminator in front of a plain HTTP service on loopback, as a load balancer stands in
front of a cloud DICOMweb archive (Debian's Orthanc 1.10 crashes serving HTTPS itself).

    python tls_proxy.py --port PORT --cert CERT --key KEY --to TARGET_PORT

Prints "listening" once it accepts TLS on 127.0.0.1:PORT; each connection is relayed byte for
byte to 127.0.0.1:TARGET_PORT.
"""
import argparse
import asyncio
import ssl


async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError, OSError):
        pass
    finally:
        writer.close()


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--to", type=int, required=True)
    args = p.parse_args()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert, args.key)

    async def relay(client_reader, client_writer):
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", args.to)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(pipe(client_reader, up_writer), pipe(up_reader, client_writer))

    server = await asyncio.start_server(relay, "127.0.0.1", args.port, ssl=context)
    print("listening", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
