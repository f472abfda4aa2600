/**
 * Non-blocking TCP client sockets on Linux's epoll, through libc and Deno's FFI.
 *
 * Why: the load generator must be far cheaper per delivered message than the server it measures.
 * An async `Deno.Conn.read` costs a promise, an op and a wake-up per call, about what the server
 * spends on one `send`; here one {@link TcpPoller.poll} is one `epoll_wait` for every ready
 * socket, and each read is a direct `read(2)` into the caller's buffer, with no promise at all.
 * It also lets a socket `bind(2)` a source address before connecting, which `Deno.connect`
 * cannot, so tens of thousands of connections can spread over 127.0.0.x addresses.
 *
 * Ownership: a {@link TcpPoller} owns its epoll descriptor and every {@link TcpSocket} it made;
 * all calls happen on the one JS thread. `poll` blocks that thread for at most its timeout. Linux
 * on x86_64 or aarch64 with glibc only (the layout of `struct epoll_event` below is x86_64's
 * packed one; aarch64 pads it to 16 bytes, handled by {@link EVENT_BYTES}).
 */

const AF_INET = 2;
const SOCK_STREAM = 1;
const SOCK_NONBLOCK = 0o4000;
const SOCK_CLOEXEC = 0o2000000;
const IPPROTO_TCP = 6;
const TCP_NODELAY = 1;
const SOL_SOCKET = 1;
const SO_ERROR = 4;
const EPOLL_CTL_ADD = 1;
const EPOLL_CTL_DEL = 2;
const EPOLL_CTL_MOD = 3;
const EPOLLIN = 0x001;
const EPOLLOUT = 0x004;
const EPOLLERR = 0x008;
const EPOLLHUP = 0x010;
const EPOLLRDHUP = 0x2000;
const EAGAIN = 11;
const EINTR = 4;
const EINPROGRESS = 115;
/** Size of `struct epoll_event`: packed on x86_64, naturally aligned elsewhere. */
const EVENT_BYTES = Deno.build.arch === "x86_64" ? 12 : 16;
/** Offset of `data` in `struct epoll_event`. */
const EVENT_DATA = Deno.build.arch === "x86_64" ? 4 : 8;

const libc = Deno.dlopen("libc.so.6", {
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
  getsockopt: { parameters: ["i32", "i32", "i32", "buffer", "buffer"], result: "i32" },
  bind: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  connect: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  read: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  write: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  close: { parameters: ["i32"], result: "i32" },
  epoll_create1: { parameters: ["i32"], result: "i32" },
  epoll_ctl: { parameters: ["i32", "i32", "i32", "buffer"], result: "i32" },
  epoll_wait: { parameters: ["i32", "buffer", "i32", "i32"], result: "i32" },
  __errno_location: { parameters: [], result: "pointer" },
}).symbols;

const errnoPointer = libc.__errno_location()!;
const errnoView = new Deno.UnsafePointerView(errnoPointer);
function errno(): number {
  return errnoView.getInt32();
}

/** A `struct sockaddr_in` for an IPv4 address and port. */
function sockaddr(host: string, port: number): Uint8Array {
  const parts = host.split(".").map(Number);
  if (parts.length !== 4 || parts.some((p) => !(p >= 0 && p <= 255))) {
    throw new Error(`Cannot connect: "${host}" is not an IPv4 address`);
  }
  const addr = new Uint8Array(16);
  const view = new DataView(addr.buffer);
  view.setUint16(0, AF_INET, true);
  view.setUint16(2, port, false);
  addr.set(parts, 4);
  return addr;
}

/** What a socket's owner is told when epoll reports it ready. */
export interface TcpHandler {
  /** Data (or end of stream) can be read. */
  readable(): void;
  /** The connect finished (check {@link TcpSocket.connectError}) or the socket can take writes. */
  writable(): void;
  /** The peer reset or the socket failed; the owner should close it. */
  hangup(): void;
}

/** One non-blocking TCP socket registered with a {@link TcpPoller}. */
export class TcpSocket {
  readonly fd: number;
  readonly #poller: TcpPoller;
  #wantWrite = true;
  #closed = false;

  /** Created by {@link TcpPoller.connect}. */
  constructor(fd: number, poller: TcpPoller) {
    this.fd = fd;
    this.#poller = poller;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Reads into `into`: bytes read, 0 at end of stream, -1 when nothing is ready. */
  read(into: Uint8Array): number {
    while (true) {
      const n = Number(libc.read(this.fd, into, BigInt(into.byteLength)));
      if (n >= 0) return n;
      const e = errno();
      if (e === EINTR) continue;
      if (e === EAGAIN) return -1;
      return 0; // a reset reads as the end of the stream
    }
  }

  /** Writes what the kernel takes now: bytes written, -1 when none fit; throws on failure. */
  write(bytes: Uint8Array): number {
    while (true) {
      const n = Number(libc.write(this.fd, bytes, BigInt(bytes.byteLength)));
      if (n >= 0) return n;
      const e = errno();
      if (e === EINTR) continue;
      if (e === EAGAIN) return -1;
      throw new Error(`Cannot write: errno ${e}`);
    }
  }

  /** The result of a non-blocking connect: 0 when connected, else an errno. */
  connectError(): number {
    const value = new Int32Array(1);
    const length = new Uint32Array([4]);
    if (libc.getsockopt(this.fd, SOL_SOCKET, SO_ERROR, value, length) !== 0) return errno();
    return value[0]!;
  }

  /** Asks to be told (or no longer) when the socket can take writes. */
  wantWrite(on: boolean): void {
    if (this.#closed || on === this.#wantWrite) return;
    this.#wantWrite = on;
    this.#poller.modify(this.fd, on);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#poller.forget(this.fd);
    libc.close(this.fd);
  }
}

/** An epoll set of client sockets and the loop step that dispatches their readiness. */
export class TcpPoller {
  readonly #epfd: number;
  readonly #events: Uint8Array;
  readonly #view: DataView;
  readonly #maxEvents: number;
  readonly #handlers: (TcpHandler | undefined)[] = [];
  readonly #event = new Uint8Array(EVENT_BYTES);
  readonly #eventView = new DataView(this.#event.buffer);
  #open = 0;

  /** Creates an epoll set that reports up to `maxEvents` sockets per poll. */
  constructor(maxEvents = 1024) {
    this.#epfd = libc.epoll_create1(SOCK_CLOEXEC);
    if (this.#epfd < 0) throw new Error(`Cannot create epoll set: errno ${errno()}`);
    this.#maxEvents = maxEvents;
    this.#events = new Uint8Array(EVENT_BYTES * maxEvents);
    this.#view = new DataView(this.#events.buffer);
  }

  /** Sockets open in this set. */
  get size(): number {
    return this.#open;
  }

  /**
   * Starts connecting to `host:port`, from `localAddress` when given; `handler.writable()` runs
   * once the attempt finished either way.
   */
  connect(host: string, port: number, localAddress: string | undefined, handler: TcpHandler) {
    const fd = libc.socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) throw new Error(`Cannot open socket: errno ${errno()}`);
    try {
      libc.setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, new Int32Array([1]), 4);
      if (localAddress !== undefined) {
        const local = sockaddr(localAddress, 0);
        if (libc.bind(fd, local, 16) !== 0) {
          throw new Error(`Cannot bind ${localAddress}: errno ${errno()}`);
        }
      }
      const remote = sockaddr(host, port);
      if (libc.connect(fd, remote, 16) !== 0 && errno() !== EINPROGRESS) {
        throw new Error(`Cannot connect to ${host}:${port}: errno ${errno()}`);
      }
      this.#ctl(EPOLL_CTL_ADD, fd, EPOLLIN | EPOLLOUT | EPOLLRDHUP);
    } catch (error) {
      libc.close(fd);
      throw error;
    }
    this.#handlers[fd] = handler;
    this.#open++;
    return new TcpSocket(fd, this);
  }

  /**
   * Waits up to `timeoutMs` for readiness and dispatches it to at most `maxEvents` sockets (the
   * others stay ready for the next call); returns how many were dispatched. Blocks the JS thread
   * for at most the timeout.
   */
  poll(timeoutMs: number, maxEvents = this.#maxEvents): number {
    const n = libc.epoll_wait(
      this.#epfd,
      this.#events,
      Math.min(maxEvents, this.#maxEvents),
      timeoutMs,
    );
    if (n < 0) {
      if (errno() === EINTR) return 0;
      throw new Error(`Cannot wait for sockets: errno ${errno()}`);
    }
    const view = this.#view;
    for (let i = 0; i < n; i++) {
      const flags = view.getUint32(i * EVENT_BYTES, true);
      const fd = view.getUint32(i * EVENT_BYTES + EVENT_DATA, true);
      const handler = this.#handlers[fd];
      if (handler === undefined) continue;
      if (flags & EPOLLOUT) handler.writable();
      if (flags & (EPOLLIN | EPOLLRDHUP)) {
        if (this.#handlers[fd] === handler) handler.readable();
      }
      if (flags & (EPOLLERR | EPOLLHUP) && this.#handlers[fd] === handler) handler.hangup();
    }
    return n;
  }

  /** Closes the epoll set (sockets must be closed first). */
  close(): void {
    libc.close(this.#epfd);
  }

  /** @internal Changes whether a socket is watched for writability. */
  modify(fd: number, write: boolean): void {
    this.#ctl(EPOLL_CTL_MOD, fd, EPOLLIN | EPOLLRDHUP | (write ? EPOLLOUT : 0));
  }

  /** @internal Drops a socket that is being closed. */
  forget(fd: number): void {
    if (this.#handlers[fd] === undefined) return;
    this.#handlers[fd] = undefined;
    this.#open--;
    this.#ctl(EPOLL_CTL_DEL, fd, 0);
  }

  #ctl(op: number, fd: number, flags: number): void {
    this.#eventView.setUint32(0, flags, true);
    this.#eventView.setUint32(EVENT_DATA, fd, true);
    this.#eventView.setUint32(EVENT_DATA + 4, 0, true);
    if (libc.epoll_ctl(this.#epfd, op, fd, this.#event) !== 0 && op !== EPOLL_CTL_DEL) {
      throw new Error(`Cannot watch socket ${fd}: errno ${errno()}`);
    }
  }
}
