/**
 * Token mode end to end: a real server started with `--jwt-secret` or `--jwks`, real WebSockets and
 * raw upgrades, tokens minted by `token.ts` or signed here with jose and WebCrypto.
 *
 * What it proves: every bad token is refused with HTTP 401, a JSON body naming the reason and no
 * upgrade; the server stamps the token's `sub` on everything whatever `sender` a frame claims;
 * `refresh` moves the expiry and the connection is closed with 4001 at the token's `exp` when it
 * is not refreshed; the HTTP API asks for a bearer token (reads) or the API key (publishing).
 */
import assert from "node:assert/strict";
import * as jose from "jose";
import {
  eventually,
  rawUpgrade,
  startTestServer,
  type TestServer,
  TestSocket,
} from "./helpers/server.ts";
import { mintToken } from "../auth/token.ts";

const sanitized = { sanitizeOps: true, sanitizeResources: true, sanitizeExit: true };

function test(name: string, fn: () => Promise<void>) {
  Deno.test({ name, ...sanitized, fn });
}

const SECRET = "parley-auth-server-test-secret-0123456789";
const ISSUER = "https://issuer.parley.test";
const AUDIENCE = "parley-chat";
const API_KEY = "parley-api-key-0123456789abcdef";
/** Token mode with issuer and audience checks. */
const HS256_SERVER = ["--jwt-secret", SECRET, "--jwt-issuer", ISSUER, "--jwt-audience", AUDIENCE];

const encoder = new TextEncoder();

/** A token for `sub` that the {@link HS256_SERVER} accepts, valid for `ttlSeconds`. */
function token(sub: string, ttlSeconds = 600, extra: { name?: string } = {}): Promise<string> {
  return mintToken({
    secret: SECRET,
    sub,
    ttlSeconds,
    issuer: ISSUER,
    audience: AUDIENCE,
    ...extra,
  });
}

/** The `exp` of a token, as the ISO string the server sends. */
function expiryOf(jwt: string): string {
  return new Date(Number(jose.decodeJwt(jwt).exp) * 1000).toISOString();
}

/** Valid claims for the {@link HS256_SERVER}, with overrides; `undefined` removes a claim. */
function claims(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  const now = Math.floor(Date.now() / 1000);
  const all: Record<string, unknown> = {
    sub: "alice",
    iss: ISSUER,
    aud: AUDIENCE,
    iat: now,
    exp: now + 600,
    ...overrides,
  };
  for (const [key, value] of Object.entries(all)) if (value === undefined) delete all[key];
  return all;
}

function segment(value: unknown): string {
  return jose.base64url.encode(JSON.stringify(value));
}

/** Signs header and claims with HMAC under any key bytes, bypassing jose's own checks. */
async function hmacToken(
  header: Record<string, unknown>,
  payload: Record<string, unknown>,
  key: Uint8Array<ArrayBuffer> = encoder.encode(SECRET),
  hash = "SHA-256",
): Promise<string> {
  const input = `${segment(header)}.${segment(payload)}`;
  const hmac = await crypto.subtle.importKey("raw", key, { name: "HMAC", hash }, false, ["sign"]);
  const signature = await crypto.subtle.sign("HMAC", hmac, encoder.encode(input));
  return `${input}.${jose.base64url.encode(new Uint8Array(signature))}`;
}

/** An unsigned `alg: none` token. */
function noneToken(payload: Record<string, unknown>): string {
  return `${segment({ alg: "none", typ: "JWT" })}.${segment(payload)}.`;
}

interface Refusal {
  status: number;
  upgrade: string | null;
  contentType: string | null;
  body: { error?: { code?: string; reason?: string; message?: string } };
}

/** Attempts an upgrade over raw TCP and returns the refusal; fails if the server upgraded. */
async function refusal(url: URL, headers: string[] = []): Promise<Refusal> {
  const { conn, response } = await rawUpgrade(url, headers);
  conn.close();
  return {
    status: response.status,
    upgrade: response.headers.get("upgrade"),
    contentType: response.headers.get("content-type"),
    body: response.status === 101 ? {} : JSON.parse(response.body),
  };
}

/** Asserts an HTTP 401 with the JSON error body naming `reason`, and no upgrade. */
function assertUnauthorized(got: Refusal, reason: string, what: string): void {
  assert.equal(got.status, 401, `${what}: status`);
  assert.equal(got.upgrade, null, `${what}: no upgrade`);
  assert.match(got.contentType ?? "", /^application\/json/, `${what}: content type`);
  assert.equal(got.body.error?.code, "unauthorized", `${what}: code`);
  assert.equal(got.body.error?.reason, reason, `${what}: reason`);
  assert.ok((got.body.error?.message ?? "").length > 0, `${what}: message`);
}

/** Waits for the server to close `socket`; fails after `ms` instead of hanging. */
async function closedWithin(socket: TestSocket, ms: number): Promise<CloseEvent> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`Not closed within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([socket.closed, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Asserts the server holds no connection at all: nothing was upgraded. */
async function assertNoConnections(server: TestServer): Promise<void> {
  await eventually(() => server.http.connections === 0, 5_000, "no connections");
  assert.equal(server.hub.size, 0);
}

test("token mode refuses a missing or bad HS256 token with 401, its reason and no upgrade", async () => {
  await using server = await startTestServer(HS256_SERVER);
  const ws = (query: Record<string, string> = {}) => new URL(server.ws(query));
  const hourAgo = () => Date.now() - 3_600_000;
  const { privateKey: rsa } = await jose.generateKeyPair("RS256");
  const cases: [string, Promise<Refusal>, string][] = [
    ["no token", refusal(ws()), "missing_token"],
    ["empty ?token=", refusal(ws({ token: "" })), "missing_token"],
    ["not a JWT", refusal(ws({ token: "not-a-jwt" })), "malformed_token"],
    [
      "bad signature",
      refusal(ws({
        token: await mintToken({
          secret: `${SECRET}-other`,
          sub: "alice",
          ttlSeconds: 600,
          issuer: ISSUER,
          audience: AUDIENCE,
        }),
      })),
      "bad_signature",
    ],
    [
      "expired an hour ago",
      refusal(ws({
        token: await mintToken({
          secret: SECRET,
          sub: "alice",
          ttlSeconds: 60,
          issuer: ISSUER,
          audience: AUDIENCE,
          now: hourAgo,
        }),
      })),
      "token_expired",
    ],
    [
      "wrong issuer",
      refusal(ws({ token: await hmacToken({ alg: "HS256" }, claims({ iss: "https://evil" })) })),
      "wrong_issuer",
    ],
    [
      "no issuer",
      refusal(ws({ token: await hmacToken({ alg: "HS256" }, claims({ iss: undefined })) })),
      "wrong_issuer",
    ],
    [
      "wrong audience",
      refusal(ws({ token: await hmacToken({ alg: "HS256" }, claims({ aud: "other-app" })) })),
      "wrong_audience",
    ],
    [
      "HS512 with the right secret",
      refusal(ws({ token: await hmacToken({ alg: "HS512" }, claims(), undefined, "SHA-512") })),
      "wrong_algorithm",
    ],
    [
      "RS256 where only a secret is configured",
      refusal(ws({
        token: await new jose.SignJWT(claims()).setProtectedHeader({ alg: "RS256", kid: "k" })
          .sign(rsa),
      })),
      "wrong_algorithm",
    ],
    ["alg none", refusal(ws({ token: noneToken(claims()) })), "wrong_algorithm"],
    [
      "alg none in the header",
      refusal(ws(), [`Authorization: Bearer ${noneToken(claims())}`]),
      "wrong_algorithm",
    ],
    [
      "no sub",
      refusal(ws({ token: await hmacToken({ alg: "HS256" }, claims({ sub: undefined })) })),
      "missing_subject",
    ],
    [
      "no exp",
      refusal(ws({ token: await hmacToken({ alg: "HS256" }, claims({ exp: undefined })) })),
      "malformed_token",
    ],
    [
      "bad signature in Authorization: Bearer",
      refusal(ws(), [
        `Authorization: Bearer ${await hmacToken(
          { alg: "HS256" },
          claims(),
          encoder.encode("x".repeat(40)),
        )}`,
      ]),
      "bad_signature",
    ],
  ];
  for (const [what, attempt, reason] of cases) assertUnauthorized(await attempt, reason, what);
  await assertNoConnections(server);
});

test("token mode refuses a token past its exp even within the clock tolerance", async () => {
  await using server = await startTestServer(HS256_SERVER);
  // Expired 5 s ago: inside the verifier's 30 s tolerance for clock skew, yet the connection
  // would be past its expiry the moment it opened.
  const late = await mintToken({
    secret: SECRET,
    sub: "alice",
    ttlSeconds: 5,
    issuer: ISSUER,
    audience: AUDIENCE,
    now: () => Date.now() - 10_000,
  });
  assertUnauthorized(
    await refusal(new URL(server.ws({ token: late }))),
    "token_expired",
    "late token",
  );
  await assertNoConnections(server);
});

/** jose's key type; spelled through jose because Deno's and Node's `CryptoKey` types differ. */
type JoseKey = Awaited<ReturnType<typeof jose.generateKeyPair>>["privateKey"];

// Key generation is slow for RSA: once for the file.
const RSA = await jose.generateKeyPair("RS256", { extractable: true });
const EC = await jose.generateKeyPair("ES256", { extractable: true });
const ED = await jose.generateKeyPair("EdDSA", { extractable: true });
const STRANGER = await jose.generateKeyPair("RS256", { extractable: true });

/** Starts a token-mode server trusting the RSA, EC and Ed25519 public keys from a JWKS file. */
async function startJwksServer(args: string[] = []): Promise<TestServer & { dir: string }> {
  const dir = await Deno.makeTempDir({ prefix: "parley-jwks-" });
  const keys = [
    { ...(await jose.exportJWK(RSA.publicKey)), kid: "rsa" },
    { ...(await jose.exportJWK(EC.publicKey)), kid: "ec" },
    { ...(await jose.exportJWK(ED.publicKey)), kid: "ed" },
  ];
  const file = `${dir}/jwks.json`;
  await Deno.writeTextFile(file, JSON.stringify({ keys }));
  const server = await startTestServer(["--jwks", file, ...args]);
  const dispose = server[Symbol.asyncDispose];
  return Object.assign(server, {
    dir,
    [Symbol.asyncDispose]: async () => {
      await dispose();
      await Deno.remove(dir, { recursive: true });
    },
  });
}

/** Signs the JWKS-server claims (no issuer or audience configured) with a private key. */
function signed(
  key: JoseKey,
  header: jose.JWTHeaderParameters,
  overrides: Record<string, unknown> = {},
): Promise<string> {
  return new jose.SignJWT(claims({ iss: undefined, aud: undefined, ...overrides }))
    .setProtectedHeader(header).sign(key);
}

test("JWKS token mode accepts RS256, ES256 and EdDSA tokens from the listed keys", async () => {
  await using server = await startJwksServer();
  const cases: [string, JoseKey, string][] = [
    ["RS256", RSA.privateKey, "rsa"],
    ["ES256", EC.privateKey, "ec"],
    ["EdDSA", ED.privateKey, "ed"],
  ];
  for (const [alg, key, kid] of cases) {
    const jwt = await signed(key, { alg, kid }, { sub: `user-${alg}` });
    await using socket = await TestSocket.open(server.ws({ token: jwt }));
    const [welcome] = socket.of("welcome");
    assert.equal(welcome?.user, `user-${alg}`, alg);
    assert.equal(welcome?.expiresAt, expiryOf(jwt), alg);
  }
});

test("JWKS token mode refuses alg none, HS/RS key confusion, a mismatched alg and strange keys", async () => {
  await using server = await startJwksServer();
  const ws = (jwt: string) => new URL(server.ws({ token: jwt }));
  const spki = await jose.exportSPKI(RSA.publicKey);
  const der = new Uint8Array(
    await crypto.subtle.exportKey("spki", RSA.publicKey as unknown as CryptoKey),
  );
  const base = claims({ iss: undefined, aud: undefined });
  const cases: [string, string, string][] = [
    ["alg none", noneToken(base), "wrong_algorithm"],
    [
      "alg none with a kid",
      `${segment({ alg: "none", kid: "rsa" })}.${segment(base)}.`,
      "wrong_algorithm",
    ],
    [
      "HS256 keyed with the RSA public key (PEM)",
      await hmacToken({ alg: "HS256", kid: "rsa" }, base, encoder.encode(spki)),
      "wrong_algorithm",
    ],
    [
      "HS256 keyed with the RSA public key (DER)",
      await hmacToken({ alg: "HS256", kid: "rsa" }, base, der),
      "wrong_algorithm",
    ],
    [
      "ES256 naming the RSA key",
      await signed(EC.privateKey, { alg: "ES256", kid: "rsa" }),
      "wrong_algorithm",
    ],
    [
      "RS256 signed by an unlisted key under a listed kid",
      await signed(STRANGER.privateKey, { alg: "RS256", kid: "rsa" }),
      "bad_signature",
    ],
    [
      "RS256 with an unknown kid",
      await signed(STRANGER.privateKey, { alg: "RS256", kid: "stranger" }),
      "unknown_key",
    ],
    [
      "RS256 without a kid",
      await signed(RSA.privateKey, { alg: "RS256" }),
      "unknown_key",
    ],
    [
      "expired ES256",
      await signed(EC.privateKey, { alg: "ES256", kid: "ec" }, {
        exp: Math.floor(Date.now() / 1000) - 3600,
      }),
      "token_expired",
    ],
  ];
  for (const [what, jwt, reason] of cases) assertUnauthorized(await refusal(ws(jwt)), reason, what);
  await assertNoConnections(server);
});

test("token mode takes the token from ?token= or Authorization: Bearer and welcomes the sub", async () => {
  await using server = await startTestServer(HS256_SERVER);
  const jwt = await token("alice", 600, { name: "Alice Liddell" });
  // ?name= means nothing in token mode: the token names the user.
  await using byQuery = await TestSocket.open(server.ws({ token: jwt, name: "mallory" }));
  await using byHeader = await TestSocket.open(server.ws(), {
    headers: { authorization: `Bearer ${jwt}` },
  });
  for (const socket of [byQuery, byHeader]) {
    const [welcome] = socket.of("welcome");
    assert.equal(welcome?.user, "alice");
    assert.equal(welcome?.expiresAt, expiryOf(jwt));
    assert.deepEqual(welcome?.rooms, ["lobby"]);
  }
  assert.equal(server.hub.connectionsOf("alice"), 2);
  assert.equal(server.hub.connectionsOf("mallory"), 0);
});

test("token mode stamps the sub on every message whatever sender a frame claims", async () => {
  await using server = await startTestServer(HS256_SERVER);
  await using alice = await TestSocket.open(
    server.ws({ token: await token("alice", 600, { name: "Alice Liddell" }) }),
  );
  await using bob = await TestSocket.open(server.ws({ token: await token("bob") }));
  alice.send({ sender: "mallory", content: "legacy frame" });
  alice.send({ type: "message", sender: "mallory", content: "typed frame", ref: "m" });
  alice.send({ type: "direct", to: "bob", sender: "mallory", content: "direct frame", ref: "d" });
  await alice.next("ack", (e) => e.ref === "m");
  await alice.next("ack", (e) => e.ref === "d");
  await bob.until((events) => events.filter((e) => e.type !== "welcome").length >= 3);
  const messages = bob.of("message");
  assert.deepEqual(messages.map((m) => [m.content, m.sender]), [
    ["legacy frame", "alice"],
    ["typed frame", "alice"],
  ]);
  const [direct] = bob.of("direct");
  assert.deepEqual([direct?.content, direct?.from, direct?.to], ["direct frame", "alice", "bob"]);
  // What was stored carries the stamped identity too.
  bob.send({ type: "history", room: "lobby", ref: "h" });
  const history = await bob.next("history");
  const stored = history.messages as { sender: string }[];
  assert.deepEqual(stored.map((m) => m.sender), ["alice", "alice"]);
  assert.ok(JSON.stringify([...alice.events, ...bob.events]).indexOf("mallory") === -1);
});

test("refresh with a newer token for the same sub outlives the first token, until the new exp", async () => {
  await using server = await startTestServer(HS256_SERVER);
  const first = await token("alice", 3);
  const firstExpiry = Date.parse(expiryOf(first));
  await using alice = await TestSocket.open(server.ws({ token: first }));
  const second = await token("alice", 6);
  alice.send({ type: "refresh", token: second, ref: "r1" });
  const ack = await alice.next("ack", (e) => e.ref === "r1");
  assert.equal(ack.expiresAt, expiryOf(second));
  // Past the first token's expiry the connection still answers.
  while (Date.now() < firstExpiry + 500) await new Promise((r) => setTimeout(r, 100));
  alice.send({ type: "ping", ref: "alive" });
  await alice.next("pong", (e) => e.ref === "alive");
  assert.equal(alice.socket.readyState, WebSocket.OPEN);
  // The refreshed token is enforced in its turn.
  const closed = await closedWithin(alice, 20_000);
  assert.equal(closed.code, 4001);
  assert.equal(closed.reason, "Token expired");
  assert.ok(
    Date.now() >= Date.parse(expiryOf(second)) - 50,
    "closed at the new expiry, not before",
  );
});

test("a connection whose token is not refreshed is closed with 4001 at the token's exp", async () => {
  await using server = await startTestServer(HS256_SERVER);
  const jwt = await token("alice", 3);
  await using alice = await TestSocket.open(server.ws({ token: jwt }));
  await using bob = await TestSocket.open(server.ws({ token: await token("bob", 600) }));
  const closed = await closedWithin(alice, 20_000);
  assert.equal(closed.code, 4001);
  assert.equal(closed.reason, "Token expired");
  assert.ok(Date.now() >= Date.parse(expiryOf(jwt)) - 50, "closed at exp, not before");
  // Only alice went: bob, whose token is good, is still served.
  bob.send({ type: "ping", ref: "b" });
  await bob.next("pong");
  await eventually(() => server.hub.size === 1, 5_000, "alice to be unregistered");
});

test("refresh is refused for another user, a bad or expired token, and leaves the expiry alone", async () => {
  await using server = await startTestServer(HS256_SERVER);
  const jwt = await token("alice", 600);
  await using alice = await TestSocket.open(server.ws({ token: jwt }));
  const attempts: [string, string, string][] = [
    ["bob", await token("bob", 3600), "forbidden"],
    ["garbage", "not-a-jwt", "unauthorized"],
    [
      "other secret",
      await mintToken({ secret: `${SECRET}-x`, sub: "alice", ttlSeconds: 3600 }),
      "unauthorized",
    ],
    ["alg none", noneToken(claims({ exp: Math.floor(Date.now() / 1000) + 3600 })), "unauthorized"],
    [
      "expired within the tolerance",
      await mintToken({
        secret: SECRET,
        sub: "alice",
        ttlSeconds: 5,
        issuer: ISSUER,
        audience: AUDIENCE,
        now: () => Date.now() - 10_000,
      }),
      "unauthorized",
    ],
  ];
  for (const [what, refresh, code] of attempts) {
    alice.send({ type: "refresh", token: refresh, ref: what });
    const error = await alice.next("error", (e) => e.ref === what);
    assert.equal(error.code, code, what);
  }
  assert.equal(alice.of("ack").length, 0);
  alice.send({ type: "ping", ref: "still" });
  await alice.next("pong");
  assert.equal(alice.socket.readyState, WebSocket.OPEN);
  // A later good refresh reports the expiry it sets, proving the refused ones set none.
  const good = await token("alice", 900);
  alice.send({ type: "refresh", token: good, ref: "ok" });
  assert.equal((await alice.next("ack", (e) => e.ref === "ok")).expiresAt, expiryOf(good));
});

test("refresh in open mode is forbidden", async () => {
  await using server = await startTestServer();
  await using alice = await TestSocket.open(server.ws({ name: "alice" }));
  alice.send({ type: "refresh", token: await token("alice"), ref: "r" });
  const error = await alice.next("error", (e) => e.ref === "r");
  assert.equal(error.code, "forbidden");
  assert.equal(alice.socket.readyState, WebSocket.OPEN);
});

test("token mode HTTP API: reads need a bearer token, publishing needs the API key", async () => {
  await using server = await startTestServer([...HS256_SERVER, "--api-key", API_KEY]);
  const jwt = await token("alice");
  const get = async (path: string, authorization?: string) => {
    const response = await fetch(new URL(path, server.url), {
      headers: authorization === undefined ? {} : { authorization },
    });
    return { status: response.status, body: await response.json() };
  };
  const post = async (authorization?: string) => {
    const response = await fetch(new URL("api/rooms/lobby/messages", server.url), {
      method: "POST",
      headers: {
        "content-type": "application/json",
        ...(authorization === undefined ? {} : { authorization }),
      },
      body: JSON.stringify({ content: "from the backend", sender: "ops" }),
    });
    return { status: response.status, body: await response.json() };
  };
  for (const path of ["api/rooms/lobby/messages", "api/rooms/lobby/presence"]) {
    const missing = await get(path);
    assert.equal(missing.status, 401, `${path} without a token`);
    assert.equal(missing.body.error.reason, "missing_token");
    const bad = await get(path, `Bearer ${noneToken(claims())}`);
    assert.equal(bad.status, 401, `${path} with alg none`);
    assert.equal(bad.body.error.reason, "wrong_algorithm");
    const good = await get(path, `Bearer ${jwt}`);
    assert.equal(good.status, 200, `${path} with a token`);
    assert.equal(good.body.room, "lobby");
  }
  const anonymous = await post();
  assert.equal(anonymous.status, 401);
  assert.equal(anonymous.body.error.code, "unauthorized");
  // A user's token is not the API key: users cannot publish as anyone they like.
  const asUser = await post(`Bearer ${jwt}`);
  assert.equal(asUser.status, 401);
  const published = await post(`Bearer ${API_KEY}`);
  assert.equal(published.status, 201);
  assert.equal(published.body.sender, "ops");
  const history = await get("api/rooms/lobby/messages", `Bearer ${jwt}`);
  assert.deepEqual(history.body.messages.map((m: { content: string }) => m.content), [
    "from the backend",
  ]);
});

test("connection limits hold for concurrent upgrades while their tokens are being verified", async () => {
  const cases: [string[], number, number][] = [
    [["--max-connections", "2", "--max-connections-per-ip", "1000"], 2, 503],
    [["--max-connections-per-ip", "1"], 1, 429],
  ];
  for (const [flags, allowed, refusedWith] of cases) {
    await using server = await startJwksServer(flags);
    const jwt = await signed(RSA.privateKey, { alg: "RS256", kid: "rsa" });
    const url = new URL(server.ws({ token: jwt }));
    // All at once: each upgrade awaits its signature check after the first look at the limits.
    const attempts = await Promise.all(Array.from({ length: 30 }, () => rawUpgrade(url)));
    for (const { conn } of attempts) conn.close();
    const statuses = attempts.map(({ response }) => response.status);
    assert.equal(statuses.filter((s) => s === 101).length, allowed, `${flags}: ${statuses}`);
    assert.equal(statuses.filter((s) => s === refusedWith).length, 30 - allowed, String(flags));
    await eventually(() => server.http.connections === 0, 8_000, "the accepted ones to close");
  }
});
