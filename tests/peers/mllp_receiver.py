"""A real HL7 v2 MLLP receiver (PyPI hl7's asyncio server) standing in for the RIS.

Every message is appended to --out as one JSON line (control ID, the ACK code answered, the
message), flushed and synced *before* the ACK goes out, so a line with "AA" means accepted.
--answer chooses the ACK code (AA, AE or AR). Prints "listening" once bound.
"""
import argparse
import asyncio
import json
import os
import sys

import hl7
from hl7.mllp import start_hl7_server


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--answer", default="AA", choices=["AA", "AE", "AR"])
    args = ap.parse_args()

    async def handle(reader, writer):
        try:
            while not writer.is_closing():
                msg = await reader.readmessage()
                control_id = str(msg.segment("MSH")[10])
                with open(args.out, "a", encoding="utf-8") as f:
                    f.write(json.dumps({"control_id": control_id, "code": args.answer, "message": str(msg)}) + "\n")
                    f.flush()
                    os.fsync(f.fileno())
                writer.writemessage(msg.create_ack(ack_code=args.answer))
                await writer.drain()
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()

    async def serve():
        async with await start_hl7_server(handle, host="127.0.0.1", port=args.port) as server:
            print("listening", flush=True)
            await server.serve_forever()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
