/**
 * Tests for help.ts: --help and --version win over everything else, and the help text lists
 * every option with its environment variable and default.
 */
import assert from "node:assert/strict";
import { helpText } from "./help.ts";
import { OPTION_CASES, PAIRED, run } from "./_testing.ts";

Deno.test("parseConfig() answers --help and --version before anything else", () => {
  for (const args of [["--help"], ["-h"], ["--bogus", "-h"], ["--port", "x", "--help"]]) {
    const result = run(args);
    assert.equal(result.kind, "help", args.join(" "));
    assert.equal(result.kind === "help" && result.text, helpText());
  }
  for (const args of [["--version"], ["-V"]]) {
    const result = run(args);
    assert.equal(result.kind, "version");
    assert.match(result.kind === "version" ? result.text : "", /^parley \d+\.\d+\.\d+/);
  }
});

Deno.test("helpText() lists every flag with its environment variable and default", () => {
  const help = helpText();
  const defaults: Record<string, string> = {
    "port": "8080",
    "host": "0.0.0.0",
    "default-room": "lobby",
    "max-frame-bytes": "65536 (64KiB)",
    "max-content-chars": "4000",
    "outbox-messages": "1024",
    "outbox-bytes": "1048576 (1MiB)",
    "idle-timeout": "60 (seconds)",
    "log-level": "info",
    "log-format": "pretty when stdout is a terminal, else json",
    "store": "sqlite:./parley.db, or the --redis URL when that is set",
    "history-limit": "10000",
    "history-days": "0",
    "redis": "unset",
    "presence-ttl": "30 (seconds)",
    "presence-events-max": "1000",
    "jwt-secret": "unset",
    "jwks": "unset",
    "jwt-issuer": "unset",
    "jwt-audience": "unset",
    "allowed-origin": "none (only the server's own host)",
    "rate": "10",
    "burst": "20",
    "rate-limit-strikes": "10",
    "max-connections": "10000",
    "max-connections-per-ip": "100",
    "api-key": "unset",
    "cert": "unset",
    "key": "unset",
    "config": "unset",
  };
  const envs = new Map([...OPTION_CASES, ...PAIRED].map(([flag, env]) => [flag, env]));
  envs.set("config", "PARLEY_CONFIG");
  // An option's block runs from its "  --flag" line to the next line that starts an option.
  const blocks = new Map<string, string>();
  for (const block of help.split(/\n(?= {2}-)/)) {
    const match = /^ {2}--([a-z-]+)/.exec(block);
    if (match?.[1] !== undefined) blocks.set(match[1], block.replace(/\s+/g, " "));
  }
  assert.deepEqual([...blocks.keys()].sort(), Object.keys(defaults).sort());
  for (const [flag, text] of Object.entries(defaults)) {
    const block = blocks.get(flag) ?? "";
    assert.ok(block.includes(`Default: ${text}.`), `--${flag} shows its default: ${block}`);
    assert.ok(block.includes(`env ${envs.get(flag)}`), `--${flag} shows its variable: ${block}`);
  }
  assert.match(help, /-h, --help/);
  assert.match(help, /-V, --version/);
  assert.match(help.replace(/\s+/g, " "), /its flag, its environment variable, the config file/);
  for (const line of help.split("\n")) assert.ok(line.length <= 100, line);
});

/** The help block of one option, on one line, from its "  --flag" line to the next option's. */
function helpBlock(flag: string): string {
  const block = helpText().split(/\n(?= {2}-)/).find((b) => b.startsWith(`  --${flag} `));
  if (block === undefined) assert.fail(`no help for --${flag}`);
  return block.replace(/\s+/g, " ");
}

Deno.test("helpText() says what the server does at the connection and rate limits", () => {
  // server.ts refuses the upgrade over --max-connections; no socket exists yet to close.
  const connections = helpBlock("max-connections");
  assert.match(connections, /refused with HTTP 503/);
  assert.doesNotMatch(connections, /1013/);
  // chat.ts asks the limiter about every frame before dispatching it, whatever its type.
  for (const flag of ["rate", "burst"]) {
    const block = helpBlock(flag);
    assert.match(block, /Frames (per second )?one connection may send/, `--${flag}`);
    assert.doesNotMatch(block, /Messages/, `--${flag}`);
  }
  assert.match(helpBlock("rate"), /Every frame counts, of any type/);
});
