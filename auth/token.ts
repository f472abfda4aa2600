/**
 * The token helper: mints HS256 tokens that a server configured with the same secret accepts.
 * Runs as `deno task token -- --sub alice [--name Alice] [--ttl 1h]`, as the `token` subcommand of
 * the server binary, or as `deno run --allow-env token.ts --sub alice`.
 *
 * Invariants:
 * - {@link tokenCommand} is pure: arguments and environment in, text and exit code out. Only the
 *   `import.meta.main` block touches the process.
 * - A minted token passes the checks of `auth.ts`: a secret of at least {@link MIN_SECRET_BYTES}
 *   bytes, a `sub` of 1–{@link MAX_USER_CHARS} characters, a `name` of at most as many, and an
 *   `exp` at most {@link MAX_TTL_S} seconds ahead.
 * - Every usage error is one line and exit code 2.
 */
import { SignJWT } from "jose";
import { MIN_SECRET_BYTES } from "./mod.ts";
import { MAX_USER_CHARS } from "../message.ts";

/** Lifetime of a token when `--ttl` is not given, in seconds (1 hour). */
export const DEFAULT_TTL_S = 3600;
/** Longest lifetime `--ttl` accepts, in seconds (365 days). */
export const MAX_TTL_S = 365 * 86_400;

/** Exit code of a usage error (bad flag, missing secret, bad ttl). */
const USAGE_EXIT_CODE = 2;
/** Seconds per `--ttl` unit suffix. */
const TTL_UNITS: Record<string, number> = { "": 1, s: 1, m: 60, h: 3600, d: 86_400 };

const USAGE = `Usage: token --sub USER [--name NAME] [--ttl TTL] [--secret SECRET]
                   [--issuer ISS] [--audience AUD]

Prints an HS256 token for a Parley server configured with the same secret.

  --sub USER       user id (the "sub" claim), 1-${MAX_USER_CHARS} characters; required
  --name NAME      display name (the "name" claim)
  --ttl TTL        lifetime: 90, 90s, 15m, 1h or 7d (default 1h, at most 365d)
  --secret SECRET  HS256 secret of at least ${MIN_SECRET_BYTES} bytes; default $PARLEY_JWT_SECRET
                   (prefer the variable: arguments show up in shell history and ps)
  --issuer ISS     "iss" claim; default $PARLEY_JWT_ISSUER
  --audience AUD   "aud" claim; default $PARLEY_JWT_AUDIENCE
  -h, --help       show this help`;

/** Options of {@link mintToken}. */
export interface MintOptions {
  /** HS256 secret, at least {@link MIN_SECRET_BYTES} bytes of UTF-8. */
  secret: string;
  /** The user id, 1–{@link MAX_USER_CHARS} characters. */
  sub: string;
  /** The display name, at most {@link MAX_USER_CHARS} characters. */
  name?: string;
  /** Lifetime, in whole seconds, 1–{@link MAX_TTL_S}. */
  ttlSeconds: number;
  /** `iss` claim, when set. */
  issuer?: string;
  /** `aud` claim, when set. */
  audience?: string;
  /** The clock, in milliseconds since the epoch like `Date.now`. */
  now?: () => number;
}

/**
 * Mints an HS256 JWT with `sub`, `iat`, `exp` and, when given, `name`, `iss` and `aud`.
 *
 * @throws RangeError when an option breaks the limits a Parley server enforces; the message
 * starts with "Cannot mint token".
 */
export async function mintToken(opts: MintOptions): Promise<string> {
  const key = new TextEncoder().encode(opts.secret);
  if (key.byteLength < MIN_SECRET_BYTES) {
    throw new RangeError(`Cannot mint token: secret must be at least ${MIN_SECRET_BYTES} bytes`);
  }
  if (opts.sub === "" || opts.sub.length > MAX_USER_CHARS) {
    throw new RangeError(`Cannot mint token: sub must be 1-${MAX_USER_CHARS} characters`);
  }
  if (opts.name !== undefined && opts.name.length > MAX_USER_CHARS) {
    throw new RangeError(`Cannot mint token: name must be at most ${MAX_USER_CHARS} characters`);
  }
  if (!Number.isInteger(opts.ttlSeconds) || opts.ttlSeconds < 1 || opts.ttlSeconds > MAX_TTL_S) {
    throw new RangeError(`Cannot mint token: ttl must be 1-${MAX_TTL_S} whole seconds`);
  }
  const issuedAt = Math.floor((opts.now ?? Date.now)() / 1000);
  const claims: Record<string, string> = {};
  if (opts.name !== undefined && opts.name !== "") claims.name = opts.name;
  const jwt = new SignJWT(claims)
    .setProtectedHeader({ alg: "HS256", typ: "JWT" })
    .setSubject(opts.sub)
    .setIssuedAt(issuedAt)
    .setExpirationTime(issuedAt + opts.ttlSeconds);
  if (opts.issuer !== undefined) jwt.setIssuer(opts.issuer);
  if (opts.audience !== undefined) jwt.setAudience(opts.audience);
  return await jwt.sign(key);
}

/**
 * Runs the token helper: parses `args` (a leading `--` from `deno task` is skipped), reads the
 * secret from `--secret` or `PARLEY_JWT_SECRET`, and returns the token with exit code 0, the usage
 * text with 0 for `--help`, or one error line with exit code 2.
 */
export async function tokenCommand(
  args: string[],
  env: (name: string) => string | undefined,
): Promise<{ output: string; exitCode: number }> {
  const parsed = parseArgs(args[0] === "--" ? args.slice(1) : args);
  if (typeof parsed === "string") return usageError(parsed);
  if (parsed.help !== undefined) return { output: USAGE, exitCode: 0 };

  const sub = parsed.sub;
  if (sub === undefined) return usageError("--sub is required");
  const secret = parsed.secret ?? env("PARLEY_JWT_SECRET");
  if (secret === undefined || secret === "") {
    return usageError("no secret; set PARLEY_JWT_SECRET or pass --secret");
  }
  let ttlSeconds = DEFAULT_TTL_S;
  if (parsed.ttl !== undefined) {
    const ttl = parseTtl(parsed.ttl);
    if (ttl === undefined) {
      return usageError(
        `invalid --ttl ${JSON.stringify(parsed.ttl)}; use 90, 90s, 15m, 1h or 7d, at most 365d`,
      );
    }
    ttlSeconds = ttl;
  }
  const options: MintOptions = { secret, sub, ttlSeconds };
  if (parsed.name !== undefined) options.name = parsed.name;
  const issuer = parsed.issuer ?? env("PARLEY_JWT_ISSUER");
  if (issuer !== undefined && issuer !== "") options.issuer = issuer;
  const audience = parsed.audience ?? env("PARLEY_JWT_AUDIENCE");
  if (audience !== undefined && audience !== "") options.audience = audience;

  try {
    return { output: await mintToken(options), exitCode: 0 };
  } catch (error) {
    if (error instanceof RangeError) {
      return { output: error.message, exitCode: USAGE_EXIT_CODE };
    }
    throw error;
  }
}

/**
 * Parses a lifetime: whole seconds, or a number with `s`, `m`, `h` or `d`. Returns undefined when
 * it is not one, is zero, or exceeds {@link MAX_TTL_S}.
 */
export function parseTtl(text: string): number | undefined {
  const match = /^(\d{1,9})([smhd]?)$/.exec(text);
  const unit = TTL_UNITS[match?.[2] ?? ""];
  if (match?.[1] === undefined || unit === undefined) return undefined;
  const seconds = Number(match[1]) * unit;
  return seconds >= 1 && seconds <= MAX_TTL_S ? seconds : undefined;
}

type Flag = "sub" | "name" | "ttl" | "secret" | "issuer" | "audience" | "help";
const VALUE_FLAGS: ReadonlySet<string> = new Set([
  "sub",
  "name",
  "ttl",
  "secret",
  "issuer",
  "audience",
]);

/** Parses `--flag value`, `--flag=value` and `-h`/`--help`; returns an error text on misuse. */
function parseArgs(args: string[]): Partial<Record<Flag, string>> | string {
  const flags: Partial<Record<Flag, string>> = {};
  for (let i = 0; i < args.length; i++) {
    const arg = args[i] ?? "";
    if (arg === "-h" || arg === "--help") {
      flags.help = "";
      continue;
    }
    if (!arg.startsWith("--")) return `unexpected argument ${JSON.stringify(arg)}`;
    const equals = arg.indexOf("=");
    const name = equals === -1 ? arg.slice(2) : arg.slice(2, equals);
    if (!VALUE_FLAGS.has(name)) return `unknown flag --${name}`;
    const flag = name as Flag;
    let value: string | undefined;
    if (equals !== -1) {
      value = arg.slice(equals + 1);
    } else {
      value = args[i + 1];
      i++;
    }
    if (value === undefined || (equals === -1 && value.startsWith("--"))) {
      return `--${name} needs a value`;
    }
    if (flags[flag] !== undefined) return `--${name} given more than once`;
    flags[flag] = value;
  }
  return flags;
}

function usageError(problem: string): { output: string; exitCode: number } {
  return { output: `Cannot mint token: ${problem}`, exitCode: USAGE_EXIT_CODE };
}

if (import.meta.main) {
  const { output, exitCode } = await tokenCommand(Deno.args, (name) => Deno.env.get(name));
  if (exitCode === 0) console.log(output);
  else console.error(output);
  Deno.exit(exitCode);
}
