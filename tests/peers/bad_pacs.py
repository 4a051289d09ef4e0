"""A hostile Storage SCP ("PACS") for the requester's robustness tests, speaking the DICOM Upper
Layer by hand over a raw asyncio socket, so that it can send PDUs no real SCP library would.

    python bad_pacs.py PORT AE_TITLE MODE

Listens on 127.0.0.1:PORT until killed, one association per connection, any number at once.
Every A-ASSOCIATE-RQ is accepted (any calling AE title; the called one is echoed even when it
is not AE_TITLE, which is only noted on stdout). Each presentation context whose abstract syntax
is a Storage SOP Class (pynetdicom's AllStoragePresentationContexts, or anything under
1.2.840.10008.5.1.4.1.1.) or Verification is accepted with the first offered transfer syntax
that is Explicit VR Little Endian or Implicit VR Little Endian (result 4 when none is); any other
abstract syntax gets result 3. The A-ASSOCIATE-AC offers a maximum PDU length of 16384.

MODE decides how a C-STORE-RQ is answered (once its last data set fragment has arrived):
  ok            a normal C-STORE-RSP, Status 0x0000 (Success); to check the script itself.
  short-pdv     one P-DATA-TF whose only PDV item has item length 1, i.e. just the presentation
                context ID and no message control header:
                    04 00 00 00 00 05 | 00 00 00 01 | <pc id>
                then the association is held open (still read, never aborted) for
                BAD_PACS_HOLD_S seconds (default 5) and the TCP connection closed.
  huge-command  P-DATA-TF PDUs of the full negotiated size (PDU length = the requester's maximum
                length, capped at 16384; 16384 when it set none), each one PDV, control byte 0x01
                (command, not last), its fragment all zero bytes, until 64 MiB of fragment bytes
                are sent, the requester goes away or it reads nothing for 30 s; never the last
                fragment. Then it holds and closes as short-pdv does.
C-ECHO-RQ is answered with a C-ECHO-RSP (Status 0x0000) in every mode. A-RELEASE-RQ gets an
A-RELEASE-RP; A-ABORT or a closed connection ends the association. Other commands are ignored.

Stdout: "bad_pacs listening PORT" once listening, then one line per association and request.
Only the standard library and (for the list of Storage SOP Classes) pynetdicom are used.
"""
import asyncio
import os
import struct
import sys

from pynetdicom import AllStoragePresentationContexts

EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
VERIFICATION = "1.2.840.10008.1.1"
APP_CONTEXT = "1.2.840.10008.3.1.1.1"
IMPLEMENTATION_UID = "2.25.318745269158743104357713298451776019421"
IMPLEMENTATION_VERSION = "BAD_PACS_1"
OUR_MAX_PDU = 16384
HUGE_TOTAL = 64 * 1024 * 1024
HOLD_S = float(os.environ.get("BAD_PACS_HOLD_S", "5"))
STALL_S = 30.0  # huge-command gives up when the peer has not read anything for this long
MAX_INCOMING_PDU = 64 * 1024 * 1024

STORAGE = {c.abstract_syntax for c in AllStoragePresentationContexts}

C_STORE_RQ, C_STORE_RSP, C_ECHO_RQ, C_ECHO_RSP = 0x0001, 0x8001, 0x0030, 0x8030
NO_DATA_SET = 0x0101


def say(*words):
    print(*words, flush=True)


def acceptable(abstract):
    return abstract in STORAGE or abstract == VERIFICATION or abstract.startswith("1.2.840.10008.5.1.4.1.1.")


# ---------------------------------------------------------------- encoding helpers

def uid_bytes(uid):
    """A UID value for the command set: NUL padded to an even length."""
    b = uid.encode("ascii")
    return b + b"\0" if len(b) % 2 else b


def item(kind, value):
    return struct.pack(">BBH", kind, 0, len(value)) + value


def pdu(kind, body):
    return struct.pack(">BBI", kind, 0, len(body)) + body


def element(group, elem, value):
    return struct.pack("<HHI", group, elem, len(value)) + value


def command_set(elements):
    """Implicit VR little endian group 0000, with (0000,0000) Command Group Length first."""
    body = b"".join(element(0x0000, e, v) for e, v in sorted(elements.items()))
    return element(0x0000, 0x0000, struct.pack("<I", len(body))) + body


def p_data(pc_id, control, fragment):
    pdv = struct.pack(">IB", len(fragment) + 2, pc_id) + bytes([control]) + fragment
    return pdu(0x04, pdv)


def parse_command(data):
    """Implicit VR little endian elements of group 0000 -> {element number: raw value}."""
    out, pos = {}, 0
    while pos + 8 <= len(data):
        group, elem, length = struct.unpack_from("<HHI", data, pos)
        pos += 8
        out[(group << 16) | elem] = data[pos:pos + length]
        pos += length
    return out


def us(value, default=0):
    return struct.unpack("<H", value[:2])[0] if value and len(value) >= 2 else default


def text(value):
    return value.rstrip(b"\0 ").decode("ascii", "replace") if value else ""


# ---------------------------------------------------------------- association

def parse_rq(body):
    """A-ASSOCIATE-RQ body -> (called, calling, reserved32, [(pc id, abstract, [ts])], peer max)."""
    called, calling, reserved = body[4:20], body[20:36], body[36:68]
    contexts, peer_max, pos = [], 0, 68
    while pos + 4 <= len(body):
        kind, _, length = struct.unpack_from(">BBH", body, pos)
        value = body[pos + 4:pos + 4 + length]
        pos += 4 + length
        if kind == 0x20:
            pc_id, abstract, syntaxes, sub = value[0], "", [], 4
            while sub + 4 <= len(value):
                skind, _, slen = struct.unpack_from(">BBH", value, sub)
                uid = value[sub + 4:sub + 4 + slen].rstrip(b"\0 ").decode("ascii", "replace")
                sub += 4 + slen
                if skind == 0x30:
                    abstract = uid
                elif skind == 0x40:
                    syntaxes.append(uid)
            contexts.append((pc_id, abstract, syntaxes))
        elif kind == 0x50:
            sub = 0
            while sub + 4 <= len(value):
                skind, _, slen = struct.unpack_from(">BBH", value, sub)
                if skind == 0x51 and slen >= 4:
                    peer_max = struct.unpack_from(">I", value, sub + 4)[0]
                sub += 4 + slen
    return called, calling, reserved, contexts, peer_max


def build_ac(called, calling, reserved, contexts):
    items = [item(0x10, APP_CONTEXT.encode())]
    accepted = {}
    for pc_id, abstract, syntaxes in contexts:
        if not acceptable(abstract):
            result, ts = 3, syntaxes[0] if syntaxes else IMPLICIT_LE
        else:
            ts = next((t for t in syntaxes if t in (EXPLICIT_LE, IMPLICIT_LE)), None)
            result = 0 if ts else 4
            ts = ts or (syntaxes[0] if syntaxes else IMPLICIT_LE)
        if result == 0:
            accepted[pc_id] = (abstract, ts)
        items.append(item(0x21, bytes([pc_id, 0, result, 0]) + item(0x40, ts.encode())))
    user = (item(0x51, struct.pack(">I", OUR_MAX_PDU)) + item(0x52, IMPLEMENTATION_UID.encode())
            + item(0x55, IMPLEMENTATION_VERSION.encode()))
    items.append(item(0x50, user))
    body = struct.pack(">HH", 1, 0) + called + calling + reserved + b"".join(items)
    return pdu(0x02, body), accepted


class Association:
    def __init__(self, reader, writer, me, mode, name):
        self.reader, self.writer, self.me, self.mode, self.name = reader, writer, me, mode, name
        self.peer_max = 0
        self.held = False  # a hostile answer has been sent; close after HOLD_S
        self.flood = None
        self.command = {}  # pc id -> bytearray being collected
        self.pending = None  # (pc id, parsed command) waiting for its data set
        self.data_len = 0

    async def read_pdu(self):
        head = await self.reader.readexactly(6)
        kind, _, length = struct.unpack(">BBI", head)
        if length > MAX_INCOMING_PDU:
            raise ValueError(f"incoming PDU length {length} too large")
        return kind, await self.reader.readexactly(length)

    async def send(self, data):
        self.writer.write(data)
        await self.writer.drain()

    async def run(self):
        kind, body = await self.read_pdu()
        if kind != 0x01:
            say(self.name, f"first PDU type 0x{kind:02X}, not A-ASSOCIATE-RQ; closing")
            return
        called, calling, reserved, contexts, self.peer_max = parse_rq(body)
        ac, self.accepted = build_ac(called, calling, reserved, contexts)
        await self.send(ac)
        called_s = called.decode("ascii", "replace").strip()
        note = "" if called_s == self.me else f" (called {called_s!r}, not {self.me!r}; accepted anyway)"
        say(self.name, f"association accepted from {calling.decode('ascii', 'replace').strip()!r}: "
            f"{len(self.accepted)}/{len(contexts)} contexts, peer max PDU {self.peer_max}{note}")
        self.closing = asyncio.Event()
        reading = asyncio.ensure_future(self.read_loop())
        waiting = asyncio.ensure_future(self.closing.wait())
        try:
            await asyncio.wait({reading, waiting}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiting.cancel()
        if reading.done():
            reading.result()  # re-raise what ended it
        else:
            reading.cancel()
            say(self.name, f"held open {HOLD_S:g} s after the hostile answer; closing TCP")

    async def read_loop(self):
        while True:
            kind, body = await self.read_pdu()
            if kind == 0x04:
                await self.on_p_data(body)
            elif kind == 0x05:
                await self.send(pdu(0x06, b"\0\0\0\0"))
                say(self.name, "A-RELEASE-RQ answered with A-RELEASE-RP")
                return
            elif kind == 0x07:
                say(self.name, "A-ABORT received")
                return
            else:
                say(self.name, f"unexpected PDU type 0x{kind:02X} ({len(body)} bytes); ignored")

    async def on_p_data(self, body):
        pos = 0
        while pos + 6 <= len(body):
            length, pc_id = struct.unpack_from(">IB", body, pos)
            control = body[pos + 5]
            fragment = body[pos + 6:pos + 4 + length]
            pos += 4 + length
            if control & 0x01:
                buf = self.command.setdefault(pc_id, bytearray())
                buf += fragment
                if control & 0x02:
                    cmd = parse_command(bytes(self.command.pop(pc_id)))
                    if us(cmd.get(0x00000800), NO_DATA_SET) == NO_DATA_SET:
                        await self.answer(pc_id, cmd)
                    else:
                        self.pending, self.data_len = (pc_id, cmd), 0
            else:
                self.data_len += len(fragment)
                if control & 0x02 and self.pending:
                    pending, self.pending = self.pending, None
                    await self.answer(*pending)

    async def answer(self, pc_id, cmd):
        field = us(cmd.get(0x00000100))
        msg_id = us(cmd.get(0x00000110))
        sop_class = text(cmd.get(0x00000002))
        sop_instance = text(cmd.get(0x00001000))
        if field == C_ECHO_RQ:
            rsp = command_set({0x0002: uid_bytes(sop_class or VERIFICATION), 0x0100: struct.pack("<H", C_ECHO_RSP),
                               0x0120: struct.pack("<H", msg_id), 0x0800: struct.pack("<H", NO_DATA_SET),
                               0x0900: struct.pack("<H", 0)})
            await self.send(p_data(pc_id, 0x03, rsp))
            say(self.name, f"C-ECHO answered with Success (message {msg_id})")
            return
        if field != C_STORE_RQ:
            say(self.name, f"command 0x{field:04X} ignored (message {msg_id})")
            return
        if self.mode == "ok":
            rsp = command_set({0x0002: uid_bytes(sop_class), 0x0100: struct.pack("<H", C_STORE_RSP),
                               0x0120: struct.pack("<H", msg_id), 0x0800: struct.pack("<H", NO_DATA_SET),
                               0x0900: struct.pack("<H", 0), 0x1000: uid_bytes(sop_instance)})
            await self.send(p_data(pc_id, 0x03, rsp))
            say(self.name, f"C-STORE answered with Success (message {msg_id}, {self.data_len} data set bytes)")
        elif self.mode == "short-pdv":
            await self.send(pdu(0x04, struct.pack(">IB", 1, pc_id)))
            say(self.name, f"C-STORE answered with short PDV (item length 1, pc {pc_id}, message {msg_id})")
            self.hold()
        elif self.mode == "huge-command":
            if self.flood is None:
                self.flood = asyncio.ensure_future(self.huge(pc_id, msg_id))

    async def huge(self, pc_id, msg_id):
        size = min(OUR_MAX_PDU, self.peer_max) if self.peer_max else OUR_MAX_PDU
        fragment = bytes(size - 6)
        data = p_data(pc_id, 0x01, fragment)
        say(self.name, f"C-STORE answered with unending command fragments (message {msg_id}, "
            f"PDU length {size}, {len(fragment)} bytes each)")
        sent = 0
        try:
            while sent + len(fragment) <= HUGE_TOTAL:
                self.writer.write(data)
                await asyncio.wait_for(self.writer.drain(), STALL_S)
                sent += len(fragment)
            say(self.name, f"huge command: sent {sent} fragment bytes, no last fragment")
        except asyncio.TimeoutError:
            say(self.name, f"huge command: peer stopped reading for {STALL_S:g} s after {sent} fragment bytes")
        except (ConnectionError, OSError) as e:
            say(self.name, f"huge command: peer gone after {sent} fragment bytes ({type(e).__name__})")
        self.hold()

    def hold(self):
        if not self.held:
            self.held = True
            asyncio.get_running_loop().call_later(HOLD_S, self.closing.set)


async def main():
    if len(sys.argv) != 4 or sys.argv[3] not in ("ok", "short-pdv", "huge-command"):
        sys.exit("usage: bad_pacs.py PORT AE_TITLE ok|short-pdv|huge-command")
    port, me, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    counter = [0]

    async def handle(reader, writer):
        counter[0] += 1
        assoc = Association(reader, writer, me, mode, f"[{counter[0]}]")
        try:
            await assoc.run()
        except asyncio.IncompleteReadError:
            say(assoc.name, "connection closed by peer")
        except (ConnectionError, OSError, ValueError) as e:
            say(assoc.name, f"connection error: {e}")
        finally:
            if assoc.flood is not None and not assoc.flood.done():
                assoc.flood.cancel()
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, OSError):
                pass

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    say("bad_pacs listening", port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
