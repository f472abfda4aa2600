/**
 * A minimal WebSocket client on raw non-blocking sockets ({@link TcpPoller}), for the benchmark's
 * load generator.
 *
 * Why not Deno's `WebSocket`: the load generator must cost far less per delivered message than
 * the server it measures, and it must be able to choose its source address. Each ready socket is
 * read with one `read(2)` into one buffer per connection, and the frame headers are walked in
 * place, so a read that returns a hundred frames costs one read, not a hundred events; the caller
 * decides per connection whether a text payload is decoded at all ({@link FrameSink.text} gets
 * the bytes).
 *
 * Scope, on purpose: the client side of RFC 6455 only as far as a benchmark needs it. Outbound
 * frames are text, unfragmented, masked with an all-zero key (a valid key that leaves the payload
 * as is, so a frame needs no copy per socket). Inbound frames may be text, ping (answered with a
 * pong), pong, or close (answered, then the socket is closed); fragmented or binary frames are
 * protocol errors that drop the connection. Nothing here validates UTF-8 or the accept hash.
 */
import type { TcpHandler, TcpPoller, TcpSocket } from "./epoll.ts";

/** Initial per-connection read buffer, in bytes; it grows to hold the largest frame. */
export const DEFAULT_BUFFER_BYTES = 16 * 1024;
/** Longest HTTP response head accepted during the handshake, in bytes. */
const MAX_HEAD_BYTES = 16 * 1024;
/** A fixed handshake key: the server echoes a hash of it, which this client does not check. */
const HANDSHAKE_KEY = "dGhlIHNhbXBsZSBub25jZQ==";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Receives what one connection reads; every call is synchronous and on the hot path. */
export interface FrameSink {
  /** A complete text frame; `payload` is a view valid only during the call. */
  text(payload: Uint8Array): void;
  /** The connection ended: the close code the server sent, or 1006 when there was none. */
  closed(code: number): void;
}

/** Where and how to connect. */
export interface RawConnectOptions {
  hostname: string;
  port: number;
  /** Request target, such as `/ws?name=alice`. */
  path: string;
  /** Subprotocol to offer, if any. */
  protocol?: string;
  /** Source address to bind (connects through `node:net`). */
  localAddress?: string;
  /** Initial read buffer size in bytes. */
  bufferBytes?: number;
}

/** Encodes a text frame as a client sends it: FIN, opcode 1, masked with a zero key. */
export function encodeTextFrame(text: string): Uint8Array {
  return encodeFrame(0x1, encoder.encode(text));
}

function encodeFrame(opcode: number, payload: Uint8Array): Uint8Array {
  const length = payload.byteLength;
  const extra = length < 126 ? 0 : length < 65536 ? 2 : 8;
  const frame = new Uint8Array(2 + extra + 4 + length);
  frame[0] = 0x80 | opcode;
  if (extra === 0) frame[1] = 0x80 | length;
  else if (extra === 2) {
    frame[1] = 0x80 | 126;
    frame[2] = length >>> 8;
    frame[3] = length & 0xff;
  } else {
    frame[1] = 0x80 | 127;
    const view = new DataView(frame.buffer);
    view.setUint32(2, Math.floor(length / 2 ** 32));
    view.setUint32(6, length >>> 0);
  }
  // Bytes 2+extra .. 6+extra stay zero: the mask key. XOR with zero leaves the payload as is.
  frame.set(payload, 2 + extra + 4);
  return frame;
}

/**
 * Counts the chat `message` events in a text payload: one object, or a JSON array of them (a
 * `parley.v1` batch). It looks for `{"type":"m` at each `{`, so it relies on both servers
 * writing `type` first and on message content holding no `{` (the load generator's does not).
 */
export function countMessages(payload: Uint8Array): number {
  let count = 0;
  let i = payload.indexOf(0x7b);
  while (i !== -1) {
    // {"type":"m — byte 2 is 't' of "type", byte 9 the first letter of its value.
    if (payload[i + 2] === 0x74 && payload[i + 9] === 0x6d) count++;
    i = payload.indexOf(0x7b, i + 1);
  }
  return count;
}

/** Parses server frames out of a growing byte buffer, in place. */
export class FrameReader {
  #buf: Uint8Array;
  #start = 0;
  #end = 0;
  readonly #onText: (payload: Uint8Array) => void;
  readonly #onControl: (opcode: number, payload: Uint8Array) => void;

  /** Creates a reader with an initial buffer of `bytes`. */
  constructor(
    bytes: number,
    onText: (payload: Uint8Array) => void,
    onControl: (opcode: number, payload: Uint8Array) => void,
  ) {
    this.#buf = new Uint8Array(bytes);
    this.#onText = onText;
    this.#onControl = onControl;
  }

  /** Free space to read into; at least `min` bytes. */
  space(min = 1): Uint8Array {
    if (this.#buf.byteLength - this.#end < min) this.#make(min);
    return this.#buf.subarray(this.#end);
  }

  /** Takes `n` bytes just read into {@link FrameReader.space} and parses what is complete. */
  commit(n: number): void {
    this.#end += n;
    this.#parse();
  }

  /** Copies a chunk in (for transports that hand over their own buffers) and parses. */
  append(chunk: Uint8Array): void {
    this.space(chunk.byteLength).set(chunk);
    this.commit(chunk.byteLength);
  }

  #parse(): void {
    const buf = this.#buf;
    let start = this.#start;
    const end = this.#end;
    while (end - start >= 2) {
      const b0 = buf[start]!;
      const b1 = buf[start + 1]!;
      let length = b1 & 0x7f;
      let header = 2;
      if (length === 126) {
        if (end - start < 4) break;
        length = (buf[start + 2]! << 8) | buf[start + 3]!;
        header = 4;
      } else if (length === 127) {
        if (end - start < 10) break;
        const high = (buf[start + 2]! << 24 >>> 0) + (buf[start + 3]! << 16) +
          (buf[start + 4]! << 8) + buf[start + 5]!;
        const low = (buf[start + 6]! << 24 >>> 0) + (buf[start + 7]! << 16) +
          (buf[start + 8]! << 8) + buf[start + 9]!;
        length = high * 2 ** 32 + low;
        header = 10;
      }
      if (b1 & 0x80) throw new Error("Cannot read frame: server frames must not be masked");
      if (end - start < header + length) {
        // Incomplete: make room for the whole frame so the next read can finish it.
        this.#start = start;
        if (this.#buf.byteLength - start < header + length) this.#make(header + length);
        return;
      }
      const payload = buf.subarray(start + header, start + header + length);
      start += header + length;
      const opcode = b0 & 0x0f;
      if ((b0 & 0x80) === 0 || opcode === 0x0) {
        throw new Error("Cannot read frame: fragmented frames are not supported");
      }
      if (opcode === 0x1) this.#onText(payload);
      else if (opcode >= 0x8) this.#onControl(opcode, payload);
      else throw new Error(`Cannot read frame: unsupported opcode ${opcode}`);
    }
    if (start === end) {
      this.#start = this.#end = 0;
    } else {
      this.#start = start;
    }
  }

  /** Moves unparsed bytes to the front, growing the buffer when `min` more would not fit. */
  #make(min: number): void {
    const pending = this.#end - this.#start;
    const needed = pending + min;
    const target = needed > this.#buf.byteLength
      ? new Uint8Array(Math.max(needed, this.#buf.byteLength * 2))
      : this.#buf;
    if (target === this.#buf) this.#buf.copyWithin(0, this.#start, this.#end);
    else target.set(this.#buf.subarray(this.#start, this.#end));
    this.#buf = target;
    this.#start = 0;
    this.#end = pending;
  }
}

/** One raw WebSocket connection on a {@link TcpPoller}. */
export class RawWebSocket implements TcpHandler {
  /** The subprotocol the server chose, or "" for none (valid once open). */
  protocol = "";
  readonly #options: RawConnectOptions;
  readonly #sink: FrameSink;
  readonly #socket: TcpSocket;
  readonly #reader: FrameReader;
  readonly #readMin: number;
  /** connecting → handshake → open → closed */
  #state: "connecting" | "handshake" | "open" | "closed" = "connecting";
  #head = new Uint8Array(0);
  #pending: Uint8Array[] = [];
  readonly #opened: PromiseWithResolvers<RawWebSocket>;

  private constructor(poller: TcpPoller, options: RawConnectOptions, sink: FrameSink) {
    this.#options = options;
    this.#sink = sink;
    const bytes = options.bufferBytes ?? DEFAULT_BUFFER_BYTES;
    this.#readMin = Math.max(256, bytes >> 2);
    this.#reader = new FrameReader(bytes, (payload) => sink.text(payload), this.#control);
    this.#opened = Promise.withResolvers();
    this.#socket = poller.connect(options.hostname, options.port, options.localAddress, this);
  }

  /**
   * Connects and completes the handshake; resolves once open. The poller must be polled for
   * anything to happen.
   */
  static connect(
    poller: TcpPoller,
    options: RawConnectOptions,
    sink: FrameSink,
  ): Promise<RawWebSocket> {
    try {
      return new RawWebSocket(poller, options, sink).#opened.promise;
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** Whether the connection is open for sending. */
  get open(): boolean {
    return this.#state === "open";
  }

  /** Whether bytes sent earlier still wait for the kernel to take them (the peer is behind). */
  get backlogged(): boolean {
    return this.#pending.length > 0;
  }

  /** Sends a prepared frame from {@link encodeTextFrame}. */
  sendFrame(frame: Uint8Array): void {
    if (this.#state !== "open") return;
    this.#write(frame);
  }

  /** Sends a text message. */
  send(text: string): void {
    this.sendFrame(encodeTextFrame(text));
  }

  /** Closes the TCP connection at once, without a close handshake. */
  close(): void {
    this.#end(1006, false);
  }

  /** @internal Poller callback. */
  writable(): void {
    if (this.#state === "connecting") {
      const error = this.#socket.connectError();
      if (error !== 0) return this.#fail(new Error(`Cannot connect: errno ${error}`));
      this.#state = "handshake";
      this.#socket.wantWrite(false);
      this.#write(handshake(this.#options));
      return;
    }
    this.#flush();
  }

  /** @internal Poller callback. */
  readable(): void {
    if (this.#state === "handshake") return this.#readHead();
    if (this.#state !== "open") return;
    const n = this.#socket.read(this.#reader.space(this.#readMin));
    if (n === 0) return this.#end(1006, true);
    if (n < 0) return;
    try {
      this.#reader.commit(n);
    } catch {
      this.#end(1002, true); // a protocol error: drop the connection
    }
  }

  /** @internal Poller callback. */
  hangup(): void {
    if (this.#state === "connecting") this.writable();
    else this.#end(1006, true);
  }

  #readHead(): void {
    const chunk = new Uint8Array(4096);
    const n = this.#socket.read(chunk);
    if (n < 0) return;
    if (n === 0) return this.#fail(new Error("Cannot upgrade: connection closed in handshake"));
    const joined = new Uint8Array(this.#head.byteLength + n);
    joined.set(this.#head);
    joined.set(chunk.subarray(0, n), this.#head.byteLength);
    this.#head = joined;
    let parsed;
    try {
      parsed = parseHead(joined);
    } catch (error) {
      return this.#fail(error as Error);
    }
    if (parsed === undefined) return;
    this.#head = new Uint8Array(0);
    this.protocol = parsed.protocol;
    this.#state = "open";
    this.#opened.resolve(this);
    if (parsed.rest.byteLength > 0) {
      try {
        this.#reader.append(parsed.rest);
      } catch {
        this.#end(1002, true);
      }
    }
  }

  #control = (opcode: number, payload: Uint8Array): void => {
    if (opcode === 0x9) this.sendFrame(encodeFrame(0xa, payload.slice()));
    else if (opcode === 0x8) {
      const code = payload.byteLength >= 2 ? (payload[0]! << 8) | payload[1]! : 1005;
      this.sendFrame(encodeFrame(0x8, payload.slice(0, 2)));
      this.#end(code, true);
    }
  };

  #write(bytes: Uint8Array): void {
    if (this.#pending.length > 0) {
      this.#pending.push(bytes);
      return;
    }
    try {
      const n = this.#socket.write(bytes);
      if (n === bytes.byteLength) return;
      this.#pending.push(n <= 0 ? bytes : bytes.subarray(n));
      this.#socket.wantWrite(true);
    } catch {
      this.#end(1006, true);
    }
  }

  #flush(): void {
    try {
      while (this.#pending.length > 0) {
        const bytes = this.#pending[0]!;
        const n = this.#socket.write(bytes);
        if (n < 0) return;
        if (n < bytes.byteLength) {
          this.#pending[0] = bytes.subarray(n);
          return;
        }
        this.#pending.shift();
      }
      this.#socket.wantWrite(false);
    } catch {
      this.#end(1006, true);
    }
  }

  #fail(error: Error): void {
    this.#state = "closed";
    this.#socket.close();
    this.#opened.reject(error);
  }

  #end(code: number, report: boolean): void {
    if (this.#state === "closed") return;
    const wasOpen = this.#state === "open";
    this.#state = "closed";
    this.#pending = [];
    this.#socket.close();
    if (!wasOpen) this.#opened.reject(new Error(`Cannot connect: closed (${code})`));
    else if (report) this.#sink.closed(code);
  }
}

function handshake(options: RawConnectOptions): Uint8Array {
  const lines = [
    `GET ${options.path} HTTP/1.1`,
    `Host: ${options.hostname}:${options.port}`,
    "Upgrade: websocket",
    "Connection: Upgrade",
    `Sec-WebSocket-Key: ${HANDSHAKE_KEY}`,
    "Sec-WebSocket-Version: 13",
  ];
  if (options.protocol !== undefined) lines.push(`Sec-WebSocket-Protocol: ${options.protocol}`);
  return encoder.encode(lines.join("\r\n") + "\r\n\r\n");
}

/** Splits a 101 response head from what follows it; undefined while the head is incomplete. */
function parseHead(bytes: Uint8Array): { protocol: string; rest: Uint8Array } | undefined {
  for (let i = 3; i < bytes.byteLength; i++) {
    if (bytes[i] === 0x0a && bytes[i - 1] === 0x0d && bytes[i - 2] === 0x0a) {
      const head = decoder.decode(bytes.subarray(0, i + 1));
      const status = head.slice(0, head.indexOf("\r\n"));
      if (!/^HTTP\/1\.1 101 /.test(status)) {
        throw new Error(`Cannot upgrade: server answered "${status}"`);
      }
      const protocol = /\r\nsec-websocket-protocol:\s*([^\r]*)\r\n/i.exec(head)?.[1]?.trim() ?? "";
      return { protocol, rest: bytes.slice(i + 1) };
    }
  }
  if (bytes.byteLength > MAX_HEAD_BYTES) throw new Error("Cannot upgrade: response head too long");
  return undefined;
}
