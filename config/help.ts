/**
 * What the command line tells a person: the `--help` text, generated from the option table so it
 * cannot drift from what is parsed, the `--version` line, and the conventions of a usage error
 * (the hint it ends with and the exit status).
 */
import denoJson from "../deno.json" with { type: "json" };
import { CONFIG_ENV, CONFIG_FLAG, type Group, SPECS } from "./options.ts";

/** Exit status for a usage error, as for any command-line tool that rejects its arguments. */
export const EXIT_USAGE = 2;

/** Ends a usage error that help would answer. */
export const USAGE_HINT = "(see parley --help)";

/** Width help text is wrapped to, in columns. */
const HELP_WIDTH = 96;
/** Column at which an option's environment variable is shown in help. */
const HELP_ENV_COLUMN = 44;
const HELP_INDENT = "      ";

function wrap(text: string, indent: string): string[] {
  const lines: string[] = [];
  let line = indent;
  for (const word of text.split(" ")) {
    if (line !== indent && line.length + 1 + word.length > HELP_WIDTH) {
      lines.push(line);
      line = indent;
    }
    line += line === indent ? word : ` ${word}`;
  }
  lines.push(line);
  return lines;
}

/** Returns the `--help` text: usage, precedence, and every option with its variable and default. */
export function helpText(): string {
  const lines = [
    "Usage: parley [options]",
    "       parley token --sub USER [--name NAME] [--ttl TTL]   (mints a token; see --help there)",
    "",
    "Parley: a WebSocket chat server (WebSocket at /ws, HTTP API under /api, browser client at /).",
    "",
    ...wrap(
      "Each option is taken from the first of these that sets it: its flag, its environment " +
        "variable, the config file (--config), its default. A flag wins over the variable and " +
        "the variable over the file, silently; values from different sources are never merged, " +
        "lists included. An empty variable counts as unset. Sizes take B, KiB, MiB or GiB " +
        "(64KiB); durations are seconds, or take s, m or h (2m). Write --name value or " +
        "--name=value.",
      "",
    ),
  ];
  let group: Group | undefined;
  for (const spec of SPECS) {
    if (spec.group !== group) {
      group = spec.group;
      lines.push("", `${group}:`);
    }
    const usage = `  --${spec.flag} ${spec.arg}${spec.multiple ? " ..." : ""}`;
    lines.push(
      `${usage.padEnd(HELP_ENV_COLUMN - 1)} env ${spec.env}`,
      ...wrap(`${spec.help} Default: ${spec.defaultText}.`, HELP_INDENT),
    );
  }
  lines.push(
    "",
    "Other:",
    `${`  --${CONFIG_FLAG} FILE`.padEnd(HELP_ENV_COLUMN - 1)} env ${CONFIG_ENV}`,
    ...wrap(
      "JSON file of options keyed by flag name in camelCase, e.g. " +
        '{"port": 9000, "maxFrameBytes": "1MiB", "allowedOrigin": ["https://chat.example"]}. ' +
        "Unknown keys are errors. A relative path is from the working directory. Default: unset.",
      HELP_INDENT,
    ),
    "  -h, --help",
    `${HELP_INDENT}Print this help and exit.`,
    "  -V, --version",
    `${HELP_INDENT}Print the version and exit.`,
    "",
    `A usage error prints one line and exits with status ${EXIT_USAGE}.`,
  );
  return lines.join("\n") + "\n";
}

/** Returns the `--version` text, `parley <version>` from deno.json. */
export function versionText(): string {
  return `parley ${denoJson.version}`;
}
