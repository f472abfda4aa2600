/**
 * Installs what the test suite needs that Deno does not bring: the Debian packages of the real
 * peers the tests run against (Redis, Chromium, nginx, Python's websockets client, openssl,
 * sqlite3, systemd-analyze, Go with gorilla/websocket for the bench's Go load generator) and Bun
 * (from npm, whose package ships the binary) for the bench's Bun peer. `deno task test` runs it first, so that command is all the set-up a
 * fresh Debian machine needs; on one that has them it only checks, in well under a second.
 *
 * As root it installs what is missing with apt-get; otherwise it prints the one command to run and
 * fails, rather than letting the tests fail one by one.
 */

/** Debian packages the tests use. */
export const TEST_PACKAGES: readonly string[] = [
  "redis-server",
  "chromium",
  "nginx",
  "python3-websockets",
  "openssl",
  "sqlite3",
  "systemd", // systemd-analyze checks deploy/parley.service
  "golang-go",
  "golang-github-gorilla-websocket-dev",
];

/** The npm package that ships the `bun` binary. */
export const BUN_PACKAGE = "bun";

/** Whether dpkg reports `name` installed. */
async function installed(name: string): Promise<boolean> {
  try {
    const { stdout } = await new Deno.Command("dpkg-query", {
      args: ["-W", "-f=${Status}", name],
      stdout: "piped",
      stderr: "null",
    }).output();
    return new TextDecoder().decode(stdout).includes("install ok installed");
  } catch {
    return false; // no dpkg: not a Debian machine
  }
}

/** Whether `bun` runs. */
async function hasBun(): Promise<boolean> {
  try {
    return (await new Deno.Command("bun", { args: ["--version"], stdout: "null", stderr: "null" })
      .output()).success;
  } catch {
    return false;
  }
}

async function run(command: string, args: string[]): Promise<boolean> {
  const { success } = await new Deno.Command(command, {
    args,
    env: { DEBIAN_FRONTEND: "noninteractive" },
    stdout: "null",
    stderr: "inherit",
  }).output();
  return success;
}

/** Installs the missing packages; returns the exit status for the test task. */
export async function setUp(): Promise<number> {
  const missing: string[] = [];
  for (const name of TEST_PACKAGES) {
    if (!(await installed(name))) missing.push(name);
  }
  const bun = await hasBun();
  if (missing.length === 0 && bun) return 0;
  if (!bun) {
    console.error(`tests: installing ${BUN_PACKAGE} from npm`);
    if (!(await run("npm", ["install", "-g", BUN_PACKAGE]))) {
      console.error(`tests: cannot install bun; run:\n  npm install -g ${BUN_PACKAGE}`);
      return 1;
    }
  }
  if (missing.length === 0) return 0;
  const command = `apt-get update && apt-get install -y --no-install-recommends ${
    missing.join(" ")
  }`;
  if (Deno.uid() !== 0) {
    console.error(`tests need Debian packages that are missing; run as root:\n  ${command}`);
    return 1;
  }
  console.error(`tests: installing ${missing.join(" ")}`);
  const ok = await run("apt-get", ["update", "-qq"]) &&
    await run("apt-get", ["install", "-y", "-qq", "--no-install-recommends", ...missing]);
  if (!ok) {
    console.error(`tests: cannot install the packages; run:\n  ${command}`);
    return 1;
  }
  return 0;
}

if (import.meta.main) Deno.exit(await setUp());
