/**
 * The browser client's files, by the name the HTTP routes serve them under.
 *
 * They are part of the module graph, not read from disk: serving them needs no read permission and
 * no particular working directory, and `deno compile` embeds them. A file added to `static/` is
 * served once it is listed here; `app.js` is the entry module and imports the other scripts by
 * these names, so every script it reaches must be listed.
 */
import actionsJs from "./actions.js" with { type: "text" };
import appJs from "./app.js" with { type: "text" };
import connectionJs from "./connection.js" with { type: "text" };
import domJs from "./dom.js" with { type: "text" };
import faviconSvg from "./favicon.svg" with { type: "text" };
import inboundJs from "./inbound.js" with { type: "text" };
import indexHtml from "./index.html" with { type: "text" };
import keyedListJs from "./keyed_list.js" with { type: "text" };
import messagesJs from "./messages.js" with { type: "text" };
import renderJs from "./render.js" with { type: "text" };
import sidebarJs from "./sidebar.js" with { type: "text" };
import stateJs from "./state.js" with { type: "text" };
import styleCss from "./style.css" with { type: "text" };

/** The files under `static/`, by the name the routes use. */
export const STATIC_FILES: Readonly<Record<string, string>> = {
  "index.html": indexHtml,
  "app.js": appJs,
  "actions.js": actionsJs,
  "connection.js": connectionJs,
  "dom.js": domJs,
  "inbound.js": inboundJs,
  "keyed_list.js": keyedListJs,
  "messages.js": messagesJs,
  "render.js": renderJs,
  "sidebar.js": sidebarJs,
  "state.js": stateJs,
  "style.css": styleCss,
  "favicon.svg": faviconSvg,
};
