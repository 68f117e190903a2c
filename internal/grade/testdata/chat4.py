#!/usr/bin/env python3
"""A step 4 chat server in Python 3 (asyncio, standard library only),
written from docs/protocol.md alone, as a student might hand one in.

The repository's own tests grade it through CHAT_CMD (see
internal/grade/grade_test.go), and grade copies of it with classic bugs.

    python3 chat4.py -addr 127.0.0.1:8000 -idle 5m -maxconns 2000
"""

import argparse
import asyncio
import re
import signal
import sys
import time
import unicodedata

MAX_LINE = 4096  # bytes, its "\n" included
MAX_PENDING = 256 * 1024  # bytes waiting for a client before it is dropped
WRITE_TIMEOUT = 5.0  # seconds a closing client may take to read the rest
RATE, BURST = 1000.0, 1000.0  # a client's lines in the room: per second, and at once
PROMPT = b"Enter your username: "

# Unicode's White_Space characters: what is trimmed from names and /quit.
WHITE_SPACE = ("\t\n\v\f\r \x85\xa0\u1680"
               + "".join(chr(c) for c in range(0x2000, 0x200B))
               + "\u2028\u2029\u202f\u205f\u3000")


def log(text):
    print(time.strftime("%Y/%m/%d %H:%M:%S"), text, file=sys.stderr, flush=True)


def parse_duration(text):
    """A Go duration, such as 300ms, 90s, 5m or 1h30m, in seconds."""
    units = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}")
    return sum(float(n) * units[u] for n, u in parts)


def decode(data):
    """Bytes to text; each invalid byte becomes a lone surrogate."""
    return data.decode("utf-8", "surrogateescape")


def sanitize(data):
    """Each run of invalid UTF-8, and each control, format or separator
    character (but the joiners U+200C and U+200D) becomes U+FFFD."""
    text = re.sub("[\udc80-\udcff]+", "\ufffd", decode(data))
    return "".join("\ufffd" if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")
                   and c not in "\u200c\u200d" else c for c in text)


# Unicode's Default_Ignorable_Code_Point: invisible, so never in a name.
IGNORABLE = [(0x00AD, 0x00AD), (0x034F, 0x034F), (0x061C, 0x061C), (0x115F, 0x1160),
             (0x17B4, 0x17B5), (0x180B, 0x180F), (0x200B, 0x200F), (0x202A, 0x202E),
             (0x2060, 0x206F), (0x3164, 0x3164), (0xFE00, 0xFE0F), (0xFEFF, 0xFEFF),
             (0xFFA0, 0xFFA0), (0xFFF0, 0xFFF8), (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A),
             (0xE0000, 0xE0FFF)]


def precis_map(name):
    """RFC 8265's UsernameCaseMapped mappings: width, lower case, NFC."""
    wide = "".join(unicodedata.normalize("NFKC", c)
                   if unicodedata.decomposition(c).startswith(("<wide>", "<narrow>")) else c
                   for c in name)
    return unicodedata.normalize("NFC", wide.lower())


def identifier(c):
    """RFC 8264's IdentifierClass, roughly: letters, digits and marks that
    have no compatibility form."""
    return (unicodedata.category(c) in ("Ll", "Lu", "Lo", "Nd", "Lm", "Mn", "Mc")
            and not unicodedata.decomposition(c).startswith("<")) or c in "_-"


def allowed(c):
    if c in "_-":
        return True
    if "\udc80" <= c <= "\udcff":  # an invalid byte
        return False
    if any(lo <= ord(c) <= hi for lo, hi in IGNORABLE):
        return False
    if unicodedata.category(c)[0] not in "LM" and unicodedata.category(c) != "Nd":
        return False
    mapped = precis_map(c)
    return mapped != "" and all(identifier(m) for m in mapped)


def quote(c):
    """c in ASCII, as Go's %+q writes one character."""
    if "\udc80" <= c <= "\udcff":
        c = "\ufffd"
    if c in "'\\":
        return "'\\" + c + "'"
    code = ord(c)
    if 0x20 <= code < 0x7F:
        return "'" + c + "'"
    escapes = {"\a": "a", "\b": "b", "\t": "t", "\n": "n", "\v": "v", "\f": "f", "\r": "r"}
    if c in escapes:
        return "'\\" + escapes[c] + "'"
    if code < 0x20 or code == 0x7F:
        return "'\\x%02x'" % code
    if code <= 0xFFFF:
        return "'\\u%04x'" % code
    return "'\\U%08x'" % code


def breaks_bidi_rule(name):
    """RFC 5893's Bidi Rule, for a name with a right-to-left character."""
    classes = [unicodedata.bidirectional(c) for c in name]
    if not set(classes) & {"R", "AL", "AN"}:
        return False
    core = classes
    while core and core[-1] == "NSM":
        core = core[:-1]
    if classes[0] in ("R", "AL"):
        ok = {"R", "AL", "AN", "EN", "ES", "CS", "ET", "ON", "BN", "NSM"}
        return (not set(classes) <= ok or not core or core[-1] not in ("R", "AL", "EN", "AN")
                or ("EN" in classes and "AN" in classes))
    if classes[0] == "L":
        ok = {"L", "EN", "ES", "CS", "ET", "ON", "BN", "NSM"}
        return not set(classes) <= ok or not core or core[-1] not in ("L", "EN")
    return True


def script(c):
    """The Unicode script of c, roughly, from its name; None for Common and
    Inherited (digits, '_', '-', combining marks)."""
    name = unicodedata.name(c, "")
    if name.startswith("CJK "):
        return "Han"
    if name.startswith(("DIGIT ", "COMBINING ", "LOW LINE", "HYPHEN")) or not name:
        return None
    return name.split()[0].capitalize()


MIXES = [{"Latin", "Han", "Hiragana", "Katakana"}, {"Latin", "Han", "Hangul"}, {"Latin", "Han", "Bopomofo"}]


def check_name(line):
    """The name in line, as the server uses it, and why it is refused (None
    if it is not)."""
    name = decode(line).strip(WHITE_SPACE)
    if not name:
        return name, "name is empty"
    if len(name) > 20:
        return name, "name is too long (max 20 characters)"
    for c in name:
        if not allowed(c):
            return name, f"name has a character that is not allowed: {quote(c)} (use letters, digits, _ or -)"
    name = precis_map(name)
    if not name or not all(identifier(c) for c in name):
        return name, "name is not a valid username (RFC 8265)"
    if breaks_bidi_rule(name):
        return name, "name breaks the Bidi Rule for right-to-left text (RFC 5893)"
    marks, last = 0, None
    for c in unicodedata.normalize("NFD", name):
        if unicodedata.category(c) in ("Mn", "Me"):
            marks += 1
            if marks > 4:
                return name, "name has more than 4 marks on one character"
            if c == last:
                return name, f"name has the same mark twice on one character: {quote(c)}"
        else:
            marks = 0
        last = c
    scripts = {script(c) for c in name} - {None}
    if len(scripts) > 1 and not any(scripts <= mix for mix in MIXES):
        return name, "name mixes scripts: " + ", ".join(sorted(scripts))
    return name, None


class TooLong(Exception):
    pass


class Client:
    def __init__(self, room, reader, writer):
        self.room, self.reader, self.writer = room, reader, writer
        self.name = None  # once in the room
        self.closed = False  # told goodbye, or dropped: nothing more is sent
        self.buf = b""
        self.eof = False

    async def send(self, data):
        """Queue data for the client; drop it if too much is waiting."""
        if self.closed:
            return
        if self.writer.transport.get_write_buffer_size() + len(data) > MAX_PENDING:
            await self.room.drop(self)
            return
        self.writer.write(data)

    async def read_line(self, idle):
        """The next line without its "\\n" (and one "\\r"), or None at the
        end. The whole line must come within idle (else TimeoutError)."""
        deadline = time.monotonic() + idle
        while True:
            end = self.buf.find(b"\n")
            if end >= MAX_LINE or (end < 0 and len(self.buf) >= MAX_LINE):
                raise TooLong()
            if end >= 0:
                line, self.buf = self.buf[:end], self.buf[end + 1:]
                return line[:-1] if line.endswith(b"\r") else line
            if self.eof:
                line, self.buf = self.buf, b""
                if not line:
                    return None
                return line[:-1] if line.endswith(b"\r") else line
            try:
                chunk = await asyncio.wait_for(self.reader.read(65536), deadline - time.monotonic())
            except ConnectionError:  # a reset: the end (a timeout is raised on)
                chunk = b""
            if not chunk:
                self.eof = True
            self.buf += chunk


class Bucket:
    """A token bucket: take() waits until one more line may go."""

    def __init__(self):
        self.tokens, self.last = BURST, time.monotonic()

    async def take(self):
        now = time.monotonic()
        self.tokens = min(BURST, self.tokens + (now - self.last) * RATE)
        self.last = now
        if self.tokens < 1:
            # Meanwhile nothing is read from this client: TCP slows it down.
            await asyncio.sleep((1 - self.tokens) / RATE)
            self.tokens, self.last = 1.0, time.monotonic()
        self.tokens -= 1


class Room:
    def __init__(self):
        self.clients = {}  # name -> Client: the room
        self.conns = set()  # every connection, named or at the prompt
        self.stopping = False

    async def broadcast(self, line, skip=None):
        data = (line + "\n").encode()
        for client in list(self.clients.values()):
            if client is not skip:
                await client.send(data)

    async def leave(self, client):
        """Takes client out of the room, once, and tells the others."""
        if client.name is not None and self.clients.get(client.name) is client:
            del self.clients[client.name]
            await self.broadcast(f"{client.name} left the chat")

    async def drop(self, client):
        """A client that does not read: out, without a word."""
        client.closed = True
        client.writer.transport.abort()
        await self.leave(client)

    def shutdown(self):
        for client in self.conns:
            if not client.closed:
                client.writer.write(b"server is shutting down\n")
                client.closed = True
                client.writer.close()


async def talk(room, client, idle):
    await client.send(PROMPT)
    bucket = Bucket()
    while True:
        if client.writer.transport.is_closing():
            return  # it is gone (or dropped): what it sent before reaches nobody
        try:
            line = await client.read_line(idle)
        except asyncio.TimeoutError:
            await client.send(b"idle timeout\n")
            return
        except TooLong:
            await client.send(b"line too long (max %d bytes)\n" % MAX_LINE)
            return
        if line is None:
            return
        if client.name is None:
            name, reason = check_name(line)
            if reason is None and name in room.clients:
                reason = "name is taken"
            if reason is not None:
                await client.send(reason.encode() + b"\n" + PROMPT)
                continue
            client.name = name
            room.clients[name] = client
            await client.send(f"welcome {name}\n".encode())
            await room.broadcast(f"{name} has arrived", skip=client)
        elif decode(line).strip(WHITE_SPACE) == "/quit":
            return
        else:
            await bucket.take()
            await room.broadcast(f"{client.name} says: {sanitize(line)}")


async def handle(room, idle, maxconns, reader, writer):
    client = Client(room, reader, writer)
    if room.stopping:
        writer.close()
        return
    if len(room.conns) >= maxconns:
        writer.write(b"server is full\n")
        writer.close()
        return
    room.conns.add(client)
    try:
        await talk(room, client, idle)
    finally:
        await room.leave(client)
        room.conns.discard(client)
        client.closed = True
        writer.close()  # after what is queued has been written
        try:
            await asyncio.wait_for(writer.wait_closed(), WRITE_TIMEOUT)
        except (asyncio.TimeoutError, ConnectionError, OSError):
            writer.transport.abort()


async def main():
    parser = argparse.ArgumentParser(description="step 4 chat server")
    parser.add_argument("-addr", default="localhost:8000", help="address to listen on")
    parser.add_argument("-idle", type=parse_duration, default=300.0,
                        help="disconnect clients that send no whole line for this long")
    parser.add_argument("-maxconns", type=int, default=2000,
                        help="the most connections at once")
    args = parser.parse_args()
    if args.idle <= 0 or args.maxconns <= 0:
        print("-idle and -maxconns must be positive", file=sys.stderr)
        sys.exit(1)
    host, _, port = args.addr.rpartition(":")
    host = {"localhost": "127.0.0.1", "": None}.get(host, host.strip("[]"))

    room = Room()
    tasks = set()

    async def connected(reader, writer):
        tasks.add(asyncio.current_task())
        try:
            await handle(room, args.idle, args.maxconns, reader, writer)
        finally:
            tasks.discard(asyncio.current_task())

    server = await asyncio.start_server(connected, host, int(port))
    where = server.sockets[0].getsockname()
    log(f"listening on {where[0]}:{where[1]}" if ":" not in where[0] else f"listening on [{where[0]}]:{where[1]}")

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    room.stopping = True
    room.shutdown()
    if tasks:
        await asyncio.wait(tasks, timeout=WRITE_TIMEOUT + 1)


if __name__ == "__main__":
    asyncio.run(main())
