/**
 * Tests of `auth.ts` with real keys and real signatures: HS256, RS256, ES256 and EdDSA tokens, the
 * classic attacks (`alg: none`, HS/RS key confusion), claim checks and request parsing. The clock
 * is injected; JWKS files live in a temp directory removed by each test.
 */
import assert from "node:assert/strict";
import * as jose from "jose";
import {
  type AuthFailureReason,
  createVerifier,
  type Identity,
  tokenFromRequest,
  type VerifierOptions,
  type VerifyResult,
} from "./mod.ts";

const SECRET = "parley-test-secret-0123456789abcdef";
/** The injected clock: 2030-01-01T00:00:00Z, in milliseconds. */
const NOW_MS = Date.UTC(2030, 0, 1);
const NOW_S = NOW_MS / 1000;
const now = () => NOW_MS;

const encoder = new TextEncoder();

/** Encodes a JSON value as one base64url segment of a compact JWS. */
function segment(value: unknown): string {
  return jose.base64url.encode(JSON.stringify(value));
}

/** Signs header and claims with HMAC-SHA-256 under any key bytes, bypassing jose's checks. */
async function hmacToken(
  header: Record<string, unknown>,
  claims: Record<string, unknown>,
  keyBytes: Uint8Array<ArrayBuffer>,
): Promise<string> {
  const signingInput = `${segment(header)}.${segment(claims)}`;
  const key = await crypto.subtle.importKey(
    "raw",
    keyBytes,
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
  const signature = await crypto.subtle.sign("HMAC", key, encoder.encode(signingInput));
  return `${signingInput}.${jose.base64url.encode(new Uint8Array(signature))}`;
}

/** Claims valid at {@link NOW_MS}, with overrides; an `undefined` override removes the claim. */
function claims(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  const all: Record<string, unknown> = {
    sub: "alice",
    name: "Alice",
    iat: NOW_S,
    exp: NOW_S + 3600,
    ...overrides,
  };
  for (const [key, value] of Object.entries(all)) if (value === undefined) delete all[key];
  return all;
}

/** An HS256 token signed with {@link SECRET} (or `secret`) carrying {@link claims}. */
function hs256(overrides: Record<string, unknown> = {}, secret = SECRET): Promise<string> {
  return hmacToken({ alg: "HS256", typ: "JWT" }, claims(overrides), encoder.encode(secret));
}

/** Signs {@link claims} with an asymmetric private key through jose. */
function signWith(
  privateKey: JoseKey,
  header: jose.JWTHeaderParameters,
  overrides: Record<string, unknown> = {},
): Promise<string> {
  return new jose.SignJWT(claims(overrides)).setProtectedHeader(header).sign(privateKey);
}

function assertIdentity(result: VerifyResult, expected: Identity): void {
  assert.deepEqual(result, { ok: true, identity: expected });
}

function assertFailure(result: VerifyResult, reason: AuthFailureReason): void {
  assert.equal(result.ok, false, `expected ${reason}, got ${JSON.stringify(result)}`);
  if (result.ok) return;
  assert.equal(result.reason, reason, result.message);
  assert.ok(result.message.length > 0);
}

const EXPIRES_AT = new Date((NOW_S + 3600) * 1000);
const ALICE: Identity = { user: "alice", name: "Alice", expiresAt: EXPIRES_AT };

/** jose's key type; spelled through jose so it matches whichever CryptoKey jose was typed with. */
type JoseKey = Awaited<ReturnType<typeof jose.generateKeyPair>>["publicKey"];

interface KeyPair {
  kid: string;
  alg: string;
  publicKey: JoseKey;
  privateKey: JoseKey;
}

async function keyPair(alg: string, kid: string): Promise<KeyPair> {
  const { publicKey, privateKey } = await jose.generateKeyPair(alg, { extractable: true });
  return { kid, alg, publicKey, privateKey };
}

// Generated once: RSA key generation is slow.
const RSA = await keyPair("RS256", "rsa-1");
const EC = await keyPair("ES256", "ec-1");
const ED = await keyPair("EdDSA", "ed-1");
const OTHER_RSA = await keyPair("RS256", "rsa-1");

async function jwks(...pairs: KeyPair[]): Promise<string> {
  const keys = await Promise.all(
    pairs.map(async ({ kid, publicKey }) => ({ ...(await jose.exportJWK(publicKey)), kid })),
  );
  return JSON.stringify({ keys });
}

/** Runs `fn` with the JWKS written to a temp file, then removes the file. */
async function withJwksFile(text: string, fn: (path: string) => Promise<void>): Promise<void> {
  const path = await Deno.makeTempFile({ prefix: "parley-jwks-", suffix: ".json" });
  try {
    await Deno.writeTextFile(path, text);
    await fn(path);
  } finally {
    await Deno.remove(path);
  }
}

Deno.test("verify() accepts a valid HS256 token and returns its identity", async () => {
  const verifier = await createVerifier({ secret: SECRET, now });
  assertIdentity(await verifier.verify(await hs256()), ALICE);
});

Deno.test("verify() leaves out name when the token has none or an empty one", async () => {
  const verifier = await createVerifier({ secret: SECRET, now });
  const expected = { user: "alice", expiresAt: EXPIRES_AT };
  assertIdentity(await verifier.verify(await hs256({ name: undefined })), expected);
  assertIdentity(await verifier.verify(await hs256({ name: "" })), expected);
});

Deno.test("verify() rejects an expired token and allows the clock tolerance", async () => {
  const verifier = await createVerifier({ secret: SECRET, now });
  assertFailure(await verifier.verify(await hs256({ exp: NOW_S - 3600 })), "token_expired");
  // 10 s late is within the default 30 s tolerance, not within a tolerance of 0.
  const late = await hs256({ exp: NOW_S - 10 });
  assert.equal((await verifier.verify(late)).ok, true);
  const strict = await createVerifier({ secret: SECRET, now, clockTolerance: 0 });
  assertFailure(await strict.verify(late), "token_expired");
});

Deno.test("verify() reads the injected clock on every call", async () => {
  let clock = NOW_MS;
  const verifier = await createVerifier({ secret: SECRET, now: () => clock, clockTolerance: 0 });
  const token = await hs256();
  assert.equal((await verifier.verify(token)).ok, true);
  clock = NOW_MS + 3600_000;
  assertFailure(await verifier.verify(token), "token_expired");
});

Deno.test("verify() rejects a token without exp", async () => {
  const verifier = await createVerifier({ secret: SECRET, now });
  assertFailure(await verifier.verify(await hs256({ exp: undefined })), "malformed_token");
  assertFailure(await verifier.verify(await hs256({ exp: "tomorrow" })), "malformed_token");
});

Deno.test("verify() rejects a token whose nbf is in the future", async () => {
  const verifier = await createVerifier({ secret: SECRET, now });
  assertFailure(await verifier.verify(await hs256({ nbf: NOW_S + 600 })), "token_not_yet_valid");
  assert.equal((await verifier.verify(await hs256({ nbf: NOW_S + 5 }))).ok, true);
});

Deno.test("verify() rejects a token signed with another secret", async () => {
  const verifier = await createVerifier({ secret: SECRET, now });
  const token = await hs256({}, "another-secret-that-is-long-enough-too");
  assertFailure(await verifier.verify(token), "bad_signature");
});

Deno.test("verify() rejects a tampered payload", async () => {
  const verifier = await createVerifier({ secret: SECRET, now });
  const [header, , signature] = (await hs256()).split(".");
  const forged = `${header}.${segment(claims({ sub: "mallory" }))}.${signature}`;
  assertFailure(await verifier.verify(forged), "bad_signature");
});

Deno.test("verify() rejects missing and malformed tokens", async () => {
  const verifier = await createVerifier({ secret: SECRET, now });
  assertFailure(await verifier.verify(""), "missing_token");
  const valid = await hs256();
  const [header, payload, signature] = valid.split(".");
  const malformed = [
    "not a token",
    "abc",
    "a.b",
    "a.b.c.d",
    `${header}.${payload}`,
    `${header}.${payload}.${signature}.`,
    `!!.${payload}.${signature}`,
    `${jose.base64url.encode("not json")}.${payload}.${signature}`,
    `${segment(["HS256"])}.${payload}.${signature}`,
    ` ${valid}`,
    `${valid}${"A".repeat(10_000)}`,
  ];
  for (const token of malformed) {
    assertFailure(await verifier.verify(token), "malformed_token");
  }
});

Deno.test("verify() rejects a correctly signed token whose payload is not JSON", async () => {
  const verifier = await createVerifier({ secret: SECRET, now });
  const signingInput = `${segment({ alg: "HS256" })}.${jose.base64url.encode("not json")}`;
  const key = await crypto.subtle.importKey(
    "raw",
    encoder.encode(SECRET),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
  const signature = await crypto.subtle.sign("HMAC", key, encoder.encode(signingInput));
  const token = `${signingInput}.${jose.base64url.encode(new Uint8Array(signature))}`;
  assertFailure(await verifier.verify(token), "malformed_token");
});

Deno.test("verify() rejects alg none, however it is spelled, in every mode", async () => {
  const verifiers = [
    await createVerifier({ secret: SECRET, now }),
    await createVerifier({ jwksJson: await jwks(RSA), now }),
    await createVerifier({ secret: SECRET, jwksJson: await jwks(RSA), now }),
  ];
  const payload = segment(claims());
  for (const alg of ["none", "None", "NONE", "nOnE"]) {
    for (const signature of ["", "c2ln"]) {
      const token = `${segment({ alg, typ: "JWT" })}.${payload}.${signature}`;
      for (const verifier of verifiers) {
        assertFailure(await verifier.verify(token), "wrong_algorithm");
      }
    }
  }
  // No alg at all is no better.
  const token = `${segment({ typ: "JWT" })}.${payload}.`;
  for (const verifier of verifiers) assertFailure(await verifier.verify(token), "wrong_algorithm");
});

Deno.test("verify() rejects HS256 tokens keyed with the RSA public key (key confusion)", async () => {
  const jwksJson = await jwks(RSA);
  const publicJwk = { ...(await jose.exportJWK(RSA.publicKey)), kid: RSA.kid };
  const spki = await jose.exportSPKI(RSA.publicKey);
  const materials = [
    encoder.encode(spki),
    encoder.encode(`${spki.trim()}\n`),
    encoder.encode(JSON.stringify(publicJwk)),
    new Uint8Array(await crypto.subtle.exportKey("spki", RSA.publicKey as unknown as CryptoKey)),
  ];
  const jwksOnly = await createVerifier({ jwksJson, now });
  const both = await createVerifier({ secret: SECRET, jwksJson, now });
  for (const material of materials) {
    const token = await hmacToken({ alg: "HS256", typ: "JWT", kid: RSA.kid }, claims(), material);
    // Without a secret, HS256 is not an algorithm this server accepts at all.
    assertFailure(await jwksOnly.verify(token), "wrong_algorithm");
    // With one, HS256 is checked against the secret only, never against a JWKS key.
    assertFailure(await both.verify(token), "bad_signature");
  }
});

Deno.test("verify() accepts RS256, ES256 and EdDSA tokens chosen by kid from a JWKS file", async () => {
  await withJwksFile(await jwks(RSA, EC, ED), async (jwksFile) => {
    const verifier = await createVerifier({ jwksFile, now });
    for (const pair of [RSA, EC, ED]) {
      const token = await signWith(pair.privateKey, { alg: pair.alg, kid: pair.kid });
      assertIdentity(await verifier.verify(token), ALICE);
    }
    // The fully-specified name of EdDSA over Ed25519 (RFC 9864) works too.
    const ed25519 = await signWith(ED.privateKey, { alg: "Ed25519", kid: ED.kid });
    assertIdentity(await verifier.verify(ed25519), ALICE);
    // HS256 is not accepted without a secret.
    assertFailure(await verifier.verify(await hs256()), "wrong_algorithm");
  });
});

Deno.test("verify() rejects an unknown or missing kid", async () => {
  const verifier = await createVerifier({ jwksJson: await jwks(RSA, EC), now });
  const unknown = await signWith(RSA.privateKey, { alg: "RS256", kid: "rsa-2" });
  assertFailure(await verifier.verify(unknown), "unknown_key");
  const missing = await signWith(RSA.privateKey, { alg: "RS256" });
  assertFailure(await verifier.verify(missing), "unknown_key");
});

Deno.test("verify() rejects a token whose alg is not that of its kid's key", async () => {
  const verifier = await createVerifier({ jwksJson: await jwks(RSA, EC, ED), now });
  // Signed with the RSA key but naming the EC key, and the other way round.
  const rsaAsEc = await signWith(RSA.privateKey, { alg: "RS256", kid: EC.kid });
  assertFailure(await verifier.verify(rsaAsEc), "wrong_algorithm");
  const ecAsEd = await signWith(EC.privateKey, { alg: "ES256", kid: ED.kid });
  assertFailure(await verifier.verify(ecAsEd), "wrong_algorithm");
  // Algorithms outside the allowed set, even with a matching key type.
  for (const alg of ["RS512", "PS256", "ES384", "HS512"]) {
    const token = `${segment({ alg, kid: RSA.kid })}.${segment(claims())}.c2ln`;
    assertFailure(await verifier.verify(token), "wrong_algorithm");
  }
});

Deno.test("verify() rejects a token signed by another key under a known kid", async () => {
  const verifier = await createVerifier({ jwksJson: await jwks(RSA), now });
  const token = await signWith(OTHER_RSA.privateKey, { alg: "RS256", kid: RSA.kid });
  assertFailure(await verifier.verify(token), "bad_signature");
});

Deno.test("verify() accepts a token from either the secret or the JWKS when both are set", async () => {
  const verifier = await createVerifier({ secret: SECRET, jwksJson: await jwks(EC), now });
  assertIdentity(await verifier.verify(await hs256()), ALICE);
  const es = await signWith(EC.privateKey, { alg: "ES256", kid: EC.kid });
  assertIdentity(await verifier.verify(es), ALICE);
});

Deno.test("verify() checks issuer and audience when configured", async () => {
  const options: VerifierOptions = {
    secret: SECRET,
    issuer: "https://auth.example",
    audience: "parley",
    now,
  };
  const verifier = await createVerifier(options);
  const good = { iss: "https://auth.example", aud: "parley" };
  assertIdentity(await verifier.verify(await hs256(good)), ALICE);
  assertIdentity(await verifier.verify(await hs256({ ...good, aud: ["x", "parley"] })), ALICE);
  const cases: [Record<string, unknown>, AuthFailureReason][] = [
    [{ ...good, iss: "https://evil.example" }, "wrong_issuer"],
    [{ ...good, iss: undefined }, "wrong_issuer"],
    [{ ...good, aud: "other" }, "wrong_audience"],
    [{ ...good, aud: undefined }, "wrong_audience"],
  ];
  for (const [overrides, reason] of cases) {
    assertFailure(await verifier.verify(await hs256(overrides)), reason);
  }
  // Unconfigured, iss and aud are not looked at.
  const lax = await createVerifier({ secret: SECRET, now });
  assert.equal((await lax.verify(await hs256({ iss: "anyone", aud: "anything" }))).ok, true);
});

Deno.test("verify() requires a sub of 1-64 characters and a name of at most 64", async () => {
  const verifier = await createVerifier({ secret: SECRET, now });
  assertFailure(await verifier.verify(await hs256({ sub: undefined })), "missing_subject");
  assertFailure(await verifier.verify(await hs256({ sub: "" })), "missing_subject");
  assertFailure(await verifier.verify(await hs256({ sub: 42 })), "missing_subject");
  assertFailure(await verifier.verify(await hs256({ sub: "a".repeat(65) })), "malformed_token");
  assert.equal((await verifier.verify(await hs256({ sub: "a".repeat(64) }))).ok, true);
  assertFailure(await verifier.verify(await hs256({ name: "n".repeat(65) })), "malformed_token");
  assertFailure(await verifier.verify(await hs256({ name: ["Alice"] })), "malformed_token");
});

Deno.test("createVerifier() refuses a secret shorter than 32 bytes", async () => {
  await assert.rejects(
    createVerifier({ secret: "a".repeat(31) }),
    { message: "Cannot configure JWT: secret must be at least 32 bytes" },
  );
  // Bytes, not characters: 11 three-byte characters are 33 bytes.
  await createVerifier({ secret: "€".repeat(11) });
});

Deno.test("createVerifier() refuses configurations without usable keys", async () => {
  const rejections: [VerifierOptions, RegExp][] = [
    [{}, /no secret or JWKS/],
    [{ jwksJson: "{" }, /is not JSON/],
    [{ jwksJson: "{}" }, /no "keys" array/],
    [{ jwksJson: '{"keys":[]}' }, /no "keys" array/],
    [{ jwksJson: '{"keys":[42]}' }, /is not an object/],
    [{ jwksJson: "{}", jwksFile: "x" }, /not both/],
    [{ secret: SECRET, clockTolerance: -1 }, /clock tolerance/],
    [{ secret: SECRET, issuer: "" }, /issuer must not be empty/],
    [{ jwksFile: "/nonexistent/parley-jwks.json" }, /cannot read JWKS file/],
  ];
  for (const [options, message] of rejections) {
    await assert.rejects(createVerifier(options), message);
  }
});

Deno.test("createVerifier() refuses JWKS keys that are private, symmetric or unnamed", async () => {
  const publicJwk = await jose.exportJWK(RSA.publicKey);
  const privateJwk = await jose.exportJWK(RSA.privateKey);
  // jose will not generate a key this weak, WebCrypto will.
  const small = await crypto.subtle.generateKey(
    {
      name: "RSASSA-PKCS1-v1_5",
      modulusLength: 1024,
      publicExponent: new Uint8Array([1, 0, 1]),
      hash: "SHA-256",
    },
    true,
    ["sign", "verify"],
  );
  const p384 = await jose.generateKeyPair("ES384", { extractable: true });
  const rejections: [unknown, RegExp][] = [
    [{ ...publicJwk }, /has no "kid"/],
    [{ ...privateJwk, kid: "k" }, /private or symmetric/],
    [{ kty: "oct", k: jose.base64url.encode(SECRET), kid: "k" }, /private or symmetric/],
    [{ ...publicJwk, kid: "k", use: "enc" }, /not a signing key/],
    [{ ...publicJwk, kid: "k", alg: "HS256" }, /"alg" "HS256", expected RS256/],
    [{ ...publicJwk, kid: "k", alg: "PS256" }, /expected RS256/],
    [{ ...(await jose.exportJWK(small.publicKey)), kid: "k" }, /shorter than 2048 bits/],
    [{ ...(await jose.exportJWK(p384.publicKey)), kid: "k" }, /not an RSA, P-256 or Ed25519/],
    [{ kty: "RSA", n: "AQAB", e: "AQAB", kid: "k" }, /shorter than 2048 bits/],
    [{ kty: "OKP", crv: "Ed25519", x: "AQAB", kid: "k" }, /cannot import/],
    [{ kty: "RSA", e: "AQAB", kid: "k" }, /cannot import/],
  ];
  for (const [key, message] of rejections) {
    await assert.rejects(createVerifier({ jwksJson: JSON.stringify({ keys: [key] }) }), message);
  }
  const twice = JSON.stringify({ keys: [{ ...publicJwk, kid: "k" }, { ...publicJwk, kid: "k" }] });
  await assert.rejects(createVerifier({ jwksJson: twice }), /listed twice/);
});

Deno.test("tokenFromRequest() reads the Authorization header, then ?token=", () => {
  function read(url: string, headers: Record<string, string> = {}): string | undefined {
    return tokenFromRequest(new Request(url, { headers }), new URL(url));
  }
  assert.equal(read("http://h/ws?token=abc.def.ghi"), "abc.def.ghi");
  assert.equal(read("http://h/ws", { authorization: "Bearer abc.def.ghi" }), "abc.def.ghi");
  assert.equal(read("http://h/ws", { authorization: "bearer   abc.def.ghi " }), "abc.def.ghi");
  assert.equal(read("http://h/ws?token=q", { authorization: "Bearer h" }), "h");
  assert.equal(read("http://h/ws?token=q", { authorization: "Basic dXNlcjpwdw==" }), "q");
  assert.equal(read("http://h/ws"), undefined);
  assert.equal(read("http://h/ws?token="), undefined);
  assert.equal(read("http://h/ws", { authorization: "Bearer" }), undefined);
  assert.equal(read("http://h/ws", { authorization: "Bearer a b" }), undefined);
});
