/**
 * The browser client's files, by the name the HTTP routes serve them under.
 *
 * They are part of the module graph, not read from disk: serving them needs no read permission and
 * no particular working directory, and `deno compile` embeds them. A file added to `static/` is
 * served once it is listed here.
 */
import appJs from "./app.js" with { type: "text" };
import faviconSvg from "./favicon.svg" with { type: "text" };
import indexHtml from "./index.html" with { type: "text" };
import styleCss from "./style.css" with { type: "text" };

/** The files under `static/`, by the name the routes use. */
export const STATIC_FILES: Readonly<Record<string, string>> = {
  "index.html": indexHtml,
  "app.js": appJs,
  "style.css": styleCss,
  "favicon.svg": faviconSvg,
};
