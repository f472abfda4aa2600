/**
 * TLS helpers for tests: a throwaway self-signed certificate from Debian's `openssl`, and a
 * WebSocket over TLS spoken by hand, for tests that run the server as a child process and read
 * its raw frames. (In-process tests can use `WebSocket` with `client: Deno.createHttpClient({
 * caCerts })` instead, as `tls_test.ts` does.)
 *
 * The certificate is for `127.0.0.1` and `localhost`, valid for a day, and is not a CA (rustls
 * refuses a CA certificate as a server's own). Callers own the connections they get.
 */
import { clientFrame, closeCode, type ServerFrame, upgradeRequest, writeAll } from "./server.ts";

/** PEM file paths and the certificate text, to pass as `caCerts`. */
export interface TestCert {
  certFile: string;
  keyFile: string;
  cert: string;
}

/** Writes `cert.pem` and `key.pem` (P-256) into `dir`. */
export async function selfSignedCert(dir: string): Promise<TestCert> {
  const certFile = `${dir}/cert.pem`;
  const keyFile = `${dir}/key.pem`;
  const { code, stderr } = await new Deno.Command("openssl", {
    args: [
      "req",
      "-x509",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:prime256v1",
      "-nodes",
      "-days",
      "1",
      "-subj",
      "/CN=localhost",
      "-addext",
      "subjectAltName=IP:127.0.0.1,DNS:localhost",
      "-addext",
      "basicConstraints=critical,CA:FALSE",
      "-keyout",
      keyFile,
      "-out",
      certFile,
    ],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).output();
  if (code !== 0) {
    throw new Error(
      `openssl failed (apt-get install openssl):\n${new TextDecoder().decode(stderr)}`,
    );
  }
  return { certFile, keyFile, cert: await Deno.readTextFile(certFile) };
}

/** A WebSocket over TLS after its handshake: the connection and the frames read so far. */
export interface TlsSocket extends Disposable {
  readonly conn: Deno.TlsConn;
  /** The response head of the handshake, status line first. */
  readonly head: string;
  /** Reads text frames until one holds an event of `type`; returns that event. */
  next(type: string): Promise<Record<string, unknown>>;
  /** Sends a JSON value as one masked text frame. */
  send(value: unknown): Promise<void>;
}

/**
 * Connects to `url` (`https://host:port/ws?…`) over TLS trusting `cert`, sends a WebSocket
 * handshake with `headers`, and returns once the response head is read (any status).
 */
export async function tlsWebSocket(
  url: URL,
  cert: string,
  headers: string[] = [],
): Promise<TlsSocket> {
  const conn = await Deno.connectTls({
    hostname: url.hostname,
    port: Number(url.port),
    caCerts: [cert],
  });
  try {
    await writeAll(conn, upgradeRequest(url, headers));
    const { head, rest } = await readHead(conn);
    let buffer = rest;
    const events: Record<string, unknown>[] = [];
    const chunk = new Uint8Array(64 * 1024);
    return {
      conn,
      head,
      async next(type) {
        while (true) {
          const index = events.findIndex((event) => event.type === type);
          if (index >= 0) return events.splice(index, 1)[0]!;
          const parsed = takeFrame(buffer);
          if (parsed === undefined) {
            const n = await conn.read(chunk);
            if (n === null) throw new Error(`Connection ended before a "${type}" event`);
            const next = new Uint8Array(buffer.length + n);
            next.set(buffer);
            next.set(chunk.subarray(0, n), buffer.length);
            buffer = next;
            continue;
          }
          buffer = parsed.rest;
          const { frame } = parsed;
          if (frame.opcode === 8) throw new Error(`Closed with ${closeCode(frame)}`);
          if (frame.opcode !== 1) continue;
          const value = JSON.parse(new TextDecoder().decode(frame.payload));
          events.push(...(Array.isArray(value) ? value : [value]));
        }
      },
      async send(value) {
        await writeAll(conn, clientFrame(JSON.stringify(value)));
      },
      [Symbol.dispose]() {
        try {
          conn.close();
        } catch {
          // already closed
        }
      },
    };
  } catch (error) {
    conn.close();
    throw error;
  }
}

/** Splits one whole unmasked server frame off the front of `bytes`, if there is one. */
function takeFrame(bytes: Uint8Array): { frame: ServerFrame; rest: Uint8Array } | undefined {
  if (bytes.length < 2) return undefined;
  let length = bytes[1]! & 0x7f;
  let offset = 2;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (length === 126) {
    if (bytes.length < 4) return undefined;
    length = view.getUint16(2);
    offset = 4;
  } else if (length === 127) {
    if (bytes.length < 10) return undefined;
    length = Number(view.getBigUint64(2));
    offset = 10;
  }
  if (bytes.length < offset + length) return undefined;
  return {
    frame: { opcode: bytes[0]! & 0x0f, payload: bytes.slice(offset, offset + length) },
    rest: bytes.slice(offset + length),
  };
}

/** Reads an HTTP response head; returns it and the bytes after it. */
async function readHead(conn: Deno.Conn): Promise<{ head: string; rest: Uint8Array }> {
  let bytes = new Uint8Array(0);
  const chunk = new Uint8Array(16 * 1024);
  while (true) {
    for (let i = 0; i + 3 < bytes.length; i++) {
      if (bytes[i] === 13 && bytes[i + 1] === 10 && bytes[i + 2] === 13 && bytes[i + 3] === 10) {
        return { head: new TextDecoder().decode(bytes.subarray(0, i)), rest: bytes.slice(i + 4) };
      }
    }
    const n = await conn.read(chunk);
    if (n === null) {
      throw new Error(
        `Connection closed before the response head: ${new TextDecoder().decode(bytes)}`,
      );
    }
    const next = new Uint8Array(bytes.length + n);
    next.set(bytes);
    next.set(chunk.subarray(0, n), bytes.length);
    bytes = next;
  }
}
