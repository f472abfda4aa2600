/**
 * Builds Parley's standalone binary: `deno task compile` writes `dist/parley`;
 * `deno task compile --output PATH` writes elsewhere.
 *
 * It runs `deno compile` on `main.ts` with exactly the `--allow-*` flags of `deno task start`, read
 * from deno.json, so the binary bakes in the permissions the server is tested with
 * (permissions_test.ts) and the two cannot drift apart. Besides those it passes:
 * - `--include static/`: the browser client. server.ts already imports it as text modules, so it is
 *   embedded either way; the flag keeps the directory in the binary's file system too.
 * - `--exclude-unused-npm`: embed only the npm packages `main.ts` reaches, not the test-only
 *   puppeteer-core tree from the lockfile (about 11 MB of npm files instead of 56 MB).
 * - `--exclude <DENO_DIR>/npm/registry.npmjs.org/bintrees/<version>/test` for each locked version
 *   of bintrees (prom-client → tdigest → bintrees): Deno 2.9 aborts with "has overflowed its
 *   stack" while embedding that directory's 2 MB extension-less list of numbers, even with
 *   `RUST_MIN_STACK` raised (the symptom of denoland/deno#36746). A dependency's tests are never
 *   needed at run time.
 *
 * `deno compile` needs `denort`, the runtime it embeds the program into: `DENORT_BIN`, or the
 * archive Deno downloads once into `$DENO_DIR/dl/`. The environment is passed through.
 *
 * Invariant: {@link compileArgs} is pure; only the `import.meta.main` block reads files and runs
 * processes.
 */

/** Where the binary goes unless `--output` says otherwise, relative to the project root. */
export const DEFAULT_OUTPUT = "dist/parley";

/** What {@link compileArgs} needs to know about the project and the machine. */
export interface CompileInputs {
  /** The `start` task's command line, from deno.json. */
  startTask: string;
  /** The keys of deno.lock's `npm` section, such as `bintrees@1.0.2`. */
  lockedNpm: readonly string[];
  /** Deno's cache directory (`deno info --json` → `denoDir`). */
  denoDir: string;
  /** The binary to write. */
  output: string;
}

/** Returns the arguments of `deno compile` (after `deno`) that build the binary. */
export function compileArgs(inputs: CompileInputs): string[] {
  const permissions = inputs.startTask.split(/\s+/).filter((part) => part.startsWith("--allow-"));
  if (permissions.length === 0) {
    throw new Error('Cannot compile: the "start" task in deno.json has no --allow-* flags');
  }
  const excludes = inputs.lockedNpm
    .filter((key) => key.startsWith("bintrees@"))
    .map((key) => {
      const version = key.slice("bintrees@".length).split("_")[0];
      return `--exclude=${inputs.denoDir}/npm/registry.npmjs.org/bintrees/${version}/test`;
    });
  return [
    "compile",
    ...permissions,
    "--include",
    "static/",
    "--exclude-unused-npm",
    ...excludes,
    "--output",
    inputs.output,
    "main.ts",
  ];
}

/** Parses `[--] [--output PATH | --output=PATH]`; returns the output path or an error. */
export function parseOutput(args: string[]): string | { error: string } {
  const rest = args[0] === "--" ? args.slice(1) : args;
  let output = DEFAULT_OUTPUT;
  for (let i = 0; i < rest.length; i++) {
    const arg = rest[i]!;
    if (arg.startsWith("--output=")) output = arg.slice("--output=".length);
    else if (arg === "--output" && rest[i + 1] !== undefined) output = rest[++i]!;
    else return { error: `unexpected argument ${JSON.stringify(arg)} (usage: --output PATH)` };
  }
  return output === "" ? { error: "--output needs a path" } : output;
}

if (import.meta.main) {
  const output = parseOutput(Deno.args);
  if (typeof output !== "string") {
    console.error(`compile: ${output.error}`);
    Deno.exit(2);
  }
  const root = new URL("../", import.meta.url);
  const config = JSON.parse(await Deno.readTextFile(new URL("deno.json", root)));
  const lock = JSON.parse(await Deno.readTextFile(new URL("deno.lock", root)));
  const info = await new Deno.Command("deno", {
    args: ["info", "--json"],
    stdout: "piped",
    stderr: "inherit",
  }).output();
  if (!info.success) Deno.exit(info.code || 1);
  const args = compileArgs({
    startTask: String(config.tasks?.start ?? ""),
    lockedNpm: Object.keys(lock.npm ?? {}),
    denoDir: JSON.parse(new TextDecoder().decode(info.stdout)).denoDir,
    output,
  });
  console.error(`deno ${args.join(" ")}`);
  const { code } = await new Deno.Command("deno", {
    args,
    cwd: root,
    stdin: "null",
    stdout: "inherit",
    stderr: "inherit",
  }).output();
  Deno.exit(code);
}
