/**
 * The README against the code: its configuration table must list exactly the flags and
 * environment variables that `parley --help` prints, each flag with the same variable and
 * placeholder, and its quick start must name the Deno version and the test command `.ci/run` uses.
 *
 * `--help` is read from the command line (`deno run main.ts --help`), not from config internals, so
 * the test holds however `config/` is arranged.
 */
import assert from "node:assert/strict";

const ROOT = new URL("../", import.meta.url);

/** One option as documented: its flags, the placeholder of its value, and its variable. */
interface OptionDoc {
  /** Long and short flags, e.g. `["--help", "-h"]`. */
  flags: string[];
  /** The value placeholder after the long flag (`N`, `SIZE`), or `""` for a switch. */
  arg: string;
  /** The environment variable, or `""` when the option has none. */
  env: string;
}

/** Runs `main.ts --help` and returns its standard output. */
async function helpOutput(): Promise<string> {
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "main.ts", "--help"],
    cwd: ROOT,
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  assert.equal(code, 0, `main.ts --help failed: ${decoder.decode(stderr)}`);
  return decoder.decode(stdout);
}

/** Parses the option lines of `--help`: `  [-h, ]--flag [ARG [...]]   [env VAR]`. */
function parseHelp(text: string): OptionDoc[] {
  const options: OptionDoc[] = [];
  for (const line of text.split("\n")) {
    const match = line.match(
      /^ {2}(?:(-[A-Za-z]), )?(--[a-z][a-z0-9-]*)(?: ([A-Z][A-Z_]*))?(?: \.\.\.)?(?:\s+env ([A-Z][A-Z0-9_]*))?\s*$/,
    );
    if (match === null) continue;
    const [, short, long, arg, env] = match;
    options.push({ flags: [long!, ...(short ? [short] : [])], arg: arg ?? "", env: env ?? "" });
  }
  return options;
}

/** Returns the rows of the first Markdown table under `## heading`, split into cells. */
function tableUnder(markdown: string, heading: string): string[][] {
  const lines = markdown.split("\n");
  const start = lines.indexOf(`## ${heading}`);
  assert.notEqual(start, -1, `README has no "## ${heading}" section`);
  const rows: string[][] = [];
  for (const line of lines.slice(start + 1)) {
    if (line.startsWith("## ")) break;
    if (!line.startsWith("|")) {
      if (rows.length > 0) break;
      continue;
    }
    rows.push(line.slice(1, -1).split(/(?<!\\)\|/).map((cell) => cell.trim()));
  }
  // Drop the header and the delimiter row.
  return rows.slice(2);
}

/** Parses the README's configuration table: flags and placeholder from column 1, variable from 2. */
function parseReadmeTable(markdown: string): OptionDoc[] {
  return tableUnder(markdown, "Configuration").map(([flagCell = "", envCell = ""]) => {
    const codes = [...flagCell.matchAll(/`([^`]+)`/g)].map((m) => m[1]!);
    const flags: string[] = [];
    let arg = "";
    for (const code of codes) {
      const [flag = "", placeholder] = code.split(" ");
      flags.push(flag);
      if (flag.startsWith("--") && placeholder !== undefined) arg = placeholder;
    }
    const envs = [...envCell.matchAll(/`([^`]+)`/g)].map((m) => m[1]!);
    assert.ok(envs.length <= 1, `README row for ${flags.join(", ")} names several variables`);
    return { flags: flags.sort(), arg, env: envs[0] ?? "" };
  });
}

/** Keys options by their sorted flags, for comparison. */
function byFlags(options: OptionDoc[]): Map<string, OptionDoc> {
  return new Map(
    options.map((o) => [[...o.flags].sort().join(" "), { ...o, flags: [...o.flags].sort() }]),
  );
}

const readme = await Deno.readTextFile(new URL("README.md", ROOT));

Deno.test("parseHelp() reads flags, placeholders and variables from help lines", () => {
  const parsed = parseHelp(
    [
      "Server:",
      "  --port N                                  env PORT",
      "      TCP port for HTTP and WebSocket; 0 picks a free port. Default: 8080.",
      "  --allowed-origin ORIGIN ...               env PARLEY_ALLOWED_ORIGIN",
      "  -h, --help",
      "      Print this help and exit.",
    ].join("\n"),
  );
  assert.deepEqual(parsed, [
    { flags: ["--port"], arg: "N", env: "PORT" },
    { flags: ["--allowed-origin"], arg: "ORIGIN", env: "PARLEY_ALLOWED_ORIGIN" },
    { flags: ["--help", "-h"], arg: "", env: "" },
  ]);
});

Deno.test("parseReadmeTable() reads the configuration table's flags and variables", () => {
  const parsed = parseReadmeTable(
    [
      "## Configuration",
      "",
      "| Flag | Env | Default | Meaning |",
      "| ---- | --- | ------- | ------- |",
      "| `--port N` | `PORT` | `8080` | a \\| b |",
      "| `-h`, `--help` | | | Print help |",
      "",
      "| not | this |",
    ].join("\n"),
  );
  assert.deepEqual(parsed, [
    { flags: ["--port"], arg: "N", env: "PORT" },
    { flags: ["--help", "-h"], arg: "", env: "" },
  ]);
});

Deno.test("README configuration table lists exactly the options of --help", async () => {
  const help = byFlags(parseHelp(await helpOutput()));
  const table = byFlags(parseReadmeTable(readme));
  // Guard against a parser that silently matches nothing on either side.
  assert.ok(help.has("--port"), "no --port in the parsed --help output");
  assert.ok(help.size >= 20, `only ${help.size} options parsed from --help`);

  const missing = [...help.keys()].filter((flags) => !table.has(flags));
  const extra = [...table.keys()].filter((flags) => !help.has(flags));
  assert.deepEqual(missing, [], "in --help but not in the README's configuration table");
  assert.deepEqual(extra, [], "in the README's configuration table but not in --help");
  for (const [flags, documented] of table) {
    assert.deepEqual(documented, help.get(flags), `README row for ${flags} differs from --help`);
  }
});

Deno.test("README quick start installs the Deno version .ci/run pins and runs its test command", async () => {
  const ci = await Deno.readTextFile(new URL(".ci/run", ROOT));
  const pinned = ci.match(/^DENO_VERSION=(\S+)$/m)?.[1];
  assert.ok(pinned !== undefined, ".ci/run pins no DENO_VERSION");
  const quickStart = readme.slice(readme.indexOf("## Quick start"));
  assert.match(
    quickStart,
    new RegExp(`^npm install -g deno@${pinned.replaceAll(".", "\\.")}\\b`, "m"),
  );
  assert.match(quickStart, /^deno task start\b/m);
  assert.match(quickStart, /```sh\ndeno task test\n```/);
  const ciCommands = ci.split("\n").filter((line) => !line.trimStart().startsWith("#"));
  assert.ok(
    ciCommands.some((line) => /^deno task test\b/.test(line)),
    ".ci/run does not run `deno task test`",
  );
});
