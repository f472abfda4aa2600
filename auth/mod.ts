/**
 * Token authentication: turns a bearer JWT into an {@link Identity}, or into an
 * {@link AuthFailure} with a stable reason and a sentence for people.
 *
 * Owns the verification keys: an HS256 secret, a set of public keys (RS256, ES256, EdDSA) read
 * from a JWKS document, or both. Invariants:
 * - Keys are imported once, in {@link createVerifier}; {@link Verifier.verify} never reads a file
 *   or the network. Rotating keys means restarting the server.
 * - The key decides the algorithm, never the token: HS256 is accepted only with the configured
 *   secret, RS256/ES256/EdDSA only with the JWKS key named by the token's `kid`, and only with the
 *   algorithm that key is for. So `alg: none` and HS/RS confusion (an HS256 token whose HMAC key
 *   is an RSA public key) fail before any signature is computed.
 * - `exp` is required: a token that never expires cannot be revoked short of rotating the key.
 *   `exp` and `nbf` are checked with {@link DEFAULT_CLOCK_TOLERANCE_S} of slack unless configured.
 * - `sub` is required, a string of 1–{@link MAX_USER_CHARS} characters; `name` is optional, a
 *   string of at most {@link MAX_USER_CHARS} characters (an empty `name` counts as absent).
 * - `verify` never throws for a bad token: every rejection is an {@link AuthFailure}. Claims are
 *   read only after the signature checked out.
 */
import * as jose from "jose";
import { MAX_USER_CHARS } from "../message.ts";

/** Shortest HS256 secret accepted, in bytes of its UTF-8 encoding (RFC 7518 §3.2: the hash size). */
export const MIN_SECRET_BYTES = 32;
/** Default slack for clock skew between the token issuer and this server, in seconds. */
export const DEFAULT_CLOCK_TOLERANCE_S = 30;
/** Longest token looked at, in characters; longer input is rejected unparsed. */
const MAX_TOKEN_CHARS = 8192;
/** Smallest RSA modulus accepted in a JWKS, in bits (jose refuses smaller ones when verifying). */
const MIN_RSA_BITS = 2048;

/** The user a verified token speaks for. */
export interface Identity {
  /** The user id: the token's `sub`. */
  user: string;
  /** The display name: the token's `name`, when it has one. */
  name?: string;
  /** When the token stops being valid: its `exp`. */
  expiresAt?: Date;
}

/**
 * Why a token was rejected. Stable, machine-readable; answer every one of them with HTTP 401.
 * - `missing_token`: no token, or an empty one.
 * - `malformed_token`: not a compact JWS, unreadable header or claims, no `exp`, a claim of the
 *   wrong type (`name` too long, `exp` not a number).
 * - `bad_signature`: the signature does not match the key.
 * - `token_expired`: `exp` is in the past (beyond the clock tolerance).
 * - `token_not_yet_valid`: `nbf` is in the future (beyond the clock tolerance).
 * - `wrong_issuer` / `wrong_audience`: `iss` / `aud` missing or not the configured one.
 * - `wrong_algorithm`: `alg` is `none`, unknown, not configured here, or not the `kid` key's.
 * - `missing_subject`: no usable `sub`.
 * - `unknown_key`: an asymmetric token without a `kid`, or with a `kid` the JWKS does not hold.
 */
export type AuthFailureReason =
  | "missing_token"
  | "malformed_token"
  | "bad_signature"
  | "token_expired"
  | "token_not_yet_valid"
  | "wrong_issuer"
  | "wrong_audience"
  | "wrong_algorithm"
  | "missing_subject"
  | "unknown_key";

/** A rejected token: a stable {@link AuthFailureReason} and a sentence for people. */
export interface AuthFailure {
  ok: false;
  reason: AuthFailureReason;
  message: string;
}

/** An accepted token and the identity it carries. */
export interface AuthSuccess {
  ok: true;
  identity: Identity;
}

/** The outcome of {@link Verifier.verify}. */
export type VerifyResult = AuthSuccess | AuthFailure;

/** Checks bearer tokens against the keys it was created with. */
export interface Verifier {
  /**
   * Verifies a compact JWT and returns the identity it carries. Never rejects for a bad token;
   * the key material was checked by {@link createVerifier}.
   */
  verify(token: string): Promise<VerifyResult>;
}

/** Options of {@link createVerifier}. At least one of `secret`, `jwksFile`, `jwksJson`. */
export interface VerifierOptions {
  /** HS256 shared secret, at least {@link MIN_SECRET_BYTES} bytes of UTF-8. */
  secret?: string;
  /** Path of a JWKS document (`{"keys": [...]}`) of public RS256/ES256/EdDSA keys with `kid`s. */
  jwksFile?: string;
  /** The same JWKS document as text; give it or `jwksFile`, not both. */
  jwksJson?: string;
  /** Required `iss` value, when set. */
  issuer?: string;
  /** Required `aud` value (or member of the `aud` array), when set. */
  audience?: string;
  /** Slack for `exp` and `nbf`, in seconds; default {@link DEFAULT_CLOCK_TOLERANCE_S}. */
  clockTolerance?: number;
  /** The clock, in milliseconds since the epoch like `Date.now` (tests inject one). */
  now?: () => number;
}

/** The asymmetric algorithms a JWKS key may be for. */
const JWKS_ALGORITHMS = new Set(["RS256", "ES256", "EdDSA", "Ed25519"]);
/** JWK members that only a private or symmetric key has. */
const PRIVATE_MEMBERS = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];
/** Three base64url segments: header, payload, signature. */
const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;

/** A key as jose types it; spelled through jose because Deno's and Node's `CryptoKey` types differ
 * when both are in one type-check. */
type JoseKey = Awaited<ReturnType<typeof jose.importJWK>>;

/** An imported key and the algorithms a token verified with it may name. */
interface VerificationKey {
  key: JoseKey;
  algorithms: string[];
}

/**
 * Creates a {@link Verifier} from an HS256 secret, a JWKS of public keys, or both (a token is then
 * checked against the one its `alg` calls for). Reads and imports every key now, once.
 *
 * @throws Error when no key is given, the secret is shorter than {@link MIN_SECRET_BYTES}, or the
 * JWKS cannot be read, parsed or imported; the message starts with "Cannot configure JWT".
 */
export async function createVerifier(options: VerifierOptions): Promise<Verifier> {
  const { secret, jwksFile, jwksJson, issuer, audience } = options;
  const clockTolerance = options.clockTolerance ?? DEFAULT_CLOCK_TOLERANCE_S;
  const now = options.now ?? Date.now;
  if (secret === undefined && jwksFile === undefined && jwksJson === undefined) {
    throw new Error("Cannot configure JWT: no secret or JWKS given");
  }
  if (jwksFile !== undefined && jwksJson !== undefined) {
    throw new Error("Cannot configure JWT: give a JWKS file or JWKS text, not both");
  }
  if (!Number.isFinite(clockTolerance) || clockTolerance < 0) {
    throw new RangeError(
      "Cannot configure JWT: clock tolerance must be a non-negative number of seconds",
    );
  }
  if (issuer === "") throw new Error("Cannot configure JWT: issuer must not be empty");
  if (audience === "") throw new Error("Cannot configure JWT: audience must not be empty");

  const hmac: VerificationKey | undefined = secret === undefined
    ? undefined
    : { key: secretBytes(secret), algorithms: ["HS256"] };
  let jwks: Map<string, VerificationKey> | undefined;
  if (jwksFile !== undefined) {
    let text: string;
    try {
      text = await Deno.readTextFile(jwksFile);
    } catch (error) {
      throw new Error(
        `Cannot configure JWT: cannot read JWKS file "${jwksFile}": ${errorText(error)}`,
      );
    }
    jwks = await importJwks(text, `JWKS file "${jwksFile}"`);
  } else if (jwksJson !== undefined) {
    jwks = await importJwks(jwksJson, "JWKS");
  }

  const verifyOptions: jose.JWTVerifyOptions = { clockTolerance, requiredClaims: ["exp"] };
  if (issuer !== undefined) verifyOptions.issuer = issuer;
  if (audience !== undefined) verifyOptions.audience = audience;

  function selectKey(header: jose.ProtectedHeaderParameters): VerificationKey | AuthFailure {
    const { alg, kid } = header;
    if (alg === "HS256") {
      return hmac ?? fail("wrong_algorithm", "Token algorithm HS256 is not accepted here");
    }
    if (typeof alg !== "string" || !JWKS_ALGORITHMS.has(alg) || jwks === undefined) {
      return fail("wrong_algorithm", `Token algorithm ${describe(alg)} is not accepted here`);
    }
    if (typeof kid !== "string") {
      return fail("unknown_key", 'Token has no "kid" header naming its key');
    }
    const entry = jwks.get(kid);
    if (entry === undefined) return fail("unknown_key", "Token key is unknown");
    if (!entry.algorithms.includes(alg)) {
      return fail("wrong_algorithm", `Token algorithm ${alg} does not match its key`);
    }
    return entry;
  }

  async function verify(token: string): Promise<VerifyResult> {
    if (token === "") return fail("missing_token", "No token given");
    if (token.length > MAX_TOKEN_CHARS || !COMPACT_JWS.test(token)) {
      return fail("malformed_token", "Token is not a compact JWT");
    }
    let header: jose.ProtectedHeaderParameters;
    try {
      header = jose.decodeProtectedHeader(token);
    } catch {
      return fail("malformed_token", "Token header is not a JSON object");
    }
    const selected = selectKey(header);
    if ("ok" in selected) return selected;

    let payload: jose.JWTPayload;
    try {
      ({ payload } = await jose.jwtVerify(token, selected.key, {
        ...verifyOptions,
        algorithms: selected.algorithms,
        currentDate: new Date(now()),
      }));
    } catch (error) {
      return failureFromError(error);
    }
    return identityFromClaims(payload);
  }

  return { verify };
}

/**
 * Returns the bearer token of a request: the `Authorization: Bearer` header when present, else the
 * `token` query parameter (browsers cannot set headers on a WebSocket). Empty values count as
 * absent.
 */
export function tokenFromRequest(req: Request, url: URL): string | undefined {
  const authorization = req.headers.get("authorization");
  if (authorization !== null) {
    const match = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(authorization);
    if (match?.[1] !== undefined) return match[1];
  }
  const query = url.searchParams.get("token");
  return query === null || query === "" ? undefined : query;
}

/** Encodes an HS256 secret, refusing one too short to resist brute force. */
function secretBytes(secret: string): Uint8Array {
  const bytes = new TextEncoder().encode(secret);
  if (bytes.byteLength < MIN_SECRET_BYTES) {
    throw new Error(`Cannot configure JWT: secret must be at least ${MIN_SECRET_BYTES} bytes`);
  }
  return bytes;
}

/** Parses a JWKS document and imports each public key for the one algorithm its type allows. */
async function importJwks(text: string, source: string): Promise<Map<string, VerificationKey>> {
  let document: unknown;
  try {
    document = JSON.parse(text);
  } catch (error) {
    throw new Error(`Cannot configure JWT: ${source} is not JSON: ${errorText(error)}`);
  }
  const keys = isRecord(document) ? document.keys : undefined;
  if (!Array.isArray(keys) || keys.length === 0) {
    throw new Error(`Cannot configure JWT: ${source} has no "keys" array of keys`);
  }
  const imported = new Map<string, VerificationKey>();
  for (const [index, jwk] of keys.entries()) {
    if (!isRecord(jwk)) {
      throw new Error(`Cannot configure JWT: key ${index} of ${source} is not an object`);
    }
    const kid = jwk.kid;
    if (typeof kid !== "string" || kid === "") {
      throw new Error(`Cannot configure JWT: key ${index} of ${source} has no "kid"`);
    }
    const where = `key "${kid}" of ${source}`;
    if (imported.has(kid)) throw new Error(`Cannot configure JWT: ${where} is listed twice`);
    if (PRIVATE_MEMBERS.some((member) => member in jwk)) {
      throw new Error(
        `Cannot configure JWT: ${where} is a private or symmetric key; list public keys only`,
      );
    }
    if (jwk.use !== undefined && jwk.use !== "sig") {
      throw new Error(`Cannot configure JWT: ${where} is not a signing key ("use": "sig")`);
    }
    const algorithms = algorithmsForKey(jwk, where);
    let key: JoseKey;
    try {
      key = await jose.importJWK(jwk as jose.JWK, algorithms[0]);
    } catch (error) {
      throw new Error(`Cannot configure JWT: cannot import ${where}: ${errorText(error)}`);
    }
    if (key instanceof Uint8Array) {
      throw new Error(`Cannot configure JWT: ${where} is not a public key`);
    }
    // Cast through `CryptoKey`: jose's key type differs between Deno's and the DOM's libraries.
    const { modulusLength } = (key as unknown as CryptoKey).algorithm as Partial<
      RsaHashedKeyAlgorithm
    >;
    if (modulusLength !== undefined && modulusLength < MIN_RSA_BITS) {
      throw new Error(`Cannot configure JWT: ${where} is shorter than ${MIN_RSA_BITS} bits`);
    }
    imported.set(kid, { key, algorithms });
  }
  return imported;
}

/** The algorithms a public JWK may verify: fixed by its type and curve, narrowed by its `alg`. */
function algorithmsForKey(jwk: Record<string, unknown>, where: string): [string, ...string[]] {
  let algorithms: [string, ...string[]];
  if (jwk.kty === "RSA") {
    algorithms = ["RS256"];
  } else if (jwk.kty === "EC" && jwk.crv === "P-256") {
    algorithms = ["ES256"];
  } else if (jwk.kty === "OKP" && jwk.crv === "Ed25519") {
    // "Ed25519" is the fully-specified name (RFC 9864) of what "EdDSA" means here.
    algorithms = ["EdDSA", "Ed25519"];
  } else {
    throw new Error(
      `Cannot configure JWT: ${where} is not an RSA, P-256 or Ed25519 public key`,
    );
  }
  if (jwk.alg === undefined) return algorithms;
  if (typeof jwk.alg === "string" && algorithms.includes(jwk.alg)) return [jwk.alg];
  throw new Error(
    `Cannot configure JWT: ${where} has "alg" ${describe(jwk.alg)}, expected ${algorithms[0]}`,
  );
}

/** Reads the identity out of verified claims, checking `sub`, `name` and `exp`. */
function identityFromClaims(payload: jose.JWTPayload): VerifyResult {
  const { sub, exp } = payload;
  if (typeof sub !== "string" || sub === "") {
    return fail("missing_subject", 'Token has no "sub" claim naming the user');
  }
  if (sub.length > MAX_USER_CHARS) {
    return fail("malformed_token", `Token claim "sub" is longer than ${MAX_USER_CHARS} characters`);
  }
  const identity: Identity = { user: sub };
  const name = payload.name;
  if (name !== undefined && name !== "") {
    if (typeof name !== "string" || name.length > MAX_USER_CHARS) {
      return fail(
        "malformed_token",
        `Token claim "name" must be a string of at most ${MAX_USER_CHARS} characters`,
      );
    }
    identity.name = name;
  }
  // jose has checked that `exp` is present, a number and not past.
  const expiresAt = new Date((exp ?? Number.NaN) * 1000);
  if (Number.isNaN(expiresAt.getTime())) {
    return fail("malformed_token", 'Token claim "exp" is out of range');
  }
  identity.expiresAt = expiresAt;
  return { ok: true, identity };
}

/** Maps a jose error to its {@link AuthFailure}; anything else is a bug and is rethrown. */
function failureFromError(error: unknown): AuthFailure {
  const { errors } = jose;
  if (error instanceof errors.JWTExpired) return fail("token_expired", "Token expired");
  if (error instanceof errors.JWTClaimValidationFailed) {
    switch (error.claim) {
      case "iss":
        return fail("wrong_issuer", "Token issuer is not accepted");
      case "aud":
        return fail("wrong_audience", "Token audience is not accepted");
      case "nbf":
        if (error.reason === "check_failed") {
          return fail("token_not_yet_valid", "Token is not valid yet");
        }
        break;
      case "exp":
        if (error.reason === "missing") {
          return fail("malformed_token", 'Token has no "exp" claim; tokens must expire');
        }
        break;
    }
    return fail("malformed_token", `Token claim "${error.claim}" is invalid`);
  }
  if (error instanceof errors.JWSSignatureVerificationFailed) {
    return fail("bad_signature", "Token signature is invalid");
  }
  if (error instanceof errors.JOSEAlgNotAllowed) {
    return fail("wrong_algorithm", "Token algorithm is not accepted here");
  }
  if (
    error instanceof errors.JWSInvalid || error instanceof errors.JWTInvalid ||
    error instanceof errors.JOSENotSupported
  ) {
    return fail("malformed_token", "Token is not a valid JWT");
  }
  throw error;
}

function fail(reason: AuthFailureReason, message: string): AuthFailure {
  return { ok: false, reason, message };
}

/** Quotes a header value for a message without echoing arbitrary amounts of client input. */
function describe(value: unknown): string {
  if (typeof value !== "string") return value === undefined ? "(none)" : "(not a string)";
  return JSON.stringify(value.length > 32 ? `${value.slice(0, 32)}…` : value);
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
