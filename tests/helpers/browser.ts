/**
 * Helpers for tests that drive the browser client (`static/`) in real Chromium through
 * puppeteer-core: launch Debian's `/usr/bin/chromium` headless with a fresh profile directory,
 * open the chat page as one user per browser context (separate cookies and storage, like separate
 * people), record every WebSocket frame the page receives (DevTools `Network` events), and read the
 * rendered message list through the page's `data-testid` hooks.
 *
 * Deno type-checks without the DOM library, so the callbacks that run inside the page see the
 * small DOM slice declared below, which is module-scoped and never leaks into other files.
 *
 * {@link TestBrowser} owns its Chromium process and profile directory; disposing it closes every
 * page, the browser and the CDP pipe, waits until puppeteer has let go of every page it opened, and
 * deletes the directory, so a test ends with none of puppeteer's timers still running.
 */
import puppeteer, { type Browser, type EvaluateFunc, type Frame, type Page } from "puppeteer-core";

/** Debian's Chromium. */
export const CHROMIUM = "/usr/bin/chromium";
/**
 * Chromium flags that work here as root in a container with no network beyond loopback and a
 * small /dev/shm; `--user-data-dir` is added per launch.
 */
export const CHROMIUM_FLAGS: readonly string[] = [
  "--headless=new",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--disable-dev-shm-usage",
];
/** Longest wait for a condition in a page, in milliseconds: generous, for a loaded machine. */
export const WAIT_MS = 20_000;
/** Desktop viewport, and the size of the README screenshot. */
export const DESKTOP = { width: 1280, height: 800 } as const;

/** The slice of the DOM that in-page callbacks use (see the module doc). */
export interface DomElement {
  readonly textContent: string | null;
  readonly innerHTML: string;
  readonly dataset: Record<string, string | undefined>;
  readonly hidden: boolean;
  value: string;
  scrollTop: number;
  readonly scrollHeight: number;
  readonly clientHeight: number;
  querySelector(selector: string): DomElement | null;
  querySelectorAll(selector: string): DomElementList;
  getBoundingClientRect(): { top: number; bottom: number; height: number };
}
/** A static node list. */
export interface DomElementList extends Iterable<DomElement> {
  readonly length: number;
}
/** The slice of `document` that in-page callbacks use; declare it as `document` where needed. */
export interface PageDocument {
  readonly body: DomElement;
  readonly visibilityState: string;
  querySelector(selector: string): DomElement | null;
  querySelectorAll(selector: string): DomElementList;
}
declare const document: PageDocument;
declare const MutationObserver: new (callback: () => void) => {
  observe(
    target: DomElement,
    options: { attributes?: boolean; childList?: boolean; subtree?: boolean },
  ): void;
};

/** One rendered row of the message list. */
export interface RenderedMessage {
  /** `data-id`: the server's id; empty while pending. */
  id: string;
  pending: boolean;
  sender: string;
  content: string;
}

/** A headless Chromium for one test; use with `await using`. */
export class TestBrowser implements AsyncDisposable {
  readonly browser: Browser;
  readonly #profile: string;
  /** One promise per page opened, settled once puppeteer has detached its main frame. */
  readonly #released: Promise<void>[] = [];

  private constructor(browser: Browser, profile: string) {
    this.browser = browser;
    this.#profile = profile;
  }

  /** Launches Chromium with a fresh profile directory. */
  static async launch(): Promise<TestBrowser> {
    const profile = await Deno.makeTempDir({ prefix: "parley-chromium-" });
    try {
      const browser = await puppeteer.launch({
        executablePath: CHROMIUM,
        headless: true,
        args: [...CHROMIUM_FLAGS, `--user-data-dir=${profile}`],
        defaultViewport: DESKTOP,
        // No process-wide signal listeners from puppeteer: the owner closes the browser.
        handleSIGINT: false,
        handleSIGTERM: false,
        handleSIGHUP: false,
      });
      return new TestBrowser(browser, profile);
    } catch (error) {
      await Deno.remove(profile, { recursive: true });
      throw error;
    }
  }

  /**
   * Opens the chat page at `url` (the server's root) as `name`, in a browser context of its own,
   * and waits until it is online.
   */
  async open(url: URL, name: string): Promise<ChatPage> {
    const context = await this.browser.createBrowserContext();
    const page = await context.newPage();
    this.#released.push(mainFrameDetached(page));
    const chat = await ChatPage.attach(page, name);
    const address = new URL(url);
    address.searchParams.set("name", name);
    await page.goto(address.href, { waitUntil: "load", timeout: WAIT_MS });
    await chat.waitForStatus("online");
    return chat;
  }

  /** Opens the chat page for several people at once (see {@link TestBrowser.open}). */
  openAll<const Names extends readonly string[]>(
    url: URL,
    ...names: Names
  ): Promise<{ -readonly [K in keyof Names]: ChatPage }> {
    return Promise.all(names.map((name) => this.open(url, name))) as Promise<
      { -readonly [K in keyof Names]: ChatPage }
    >;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    try {
      await this.browser.close();
      // Chromium can end a page's session before the pipe closes; puppeteer then waits on a
      // 100 ms timer for a frame swap before it detaches the page, and `close()` does not wait
      // for that. On a busy machine the timer would outlive the test (see mainFrameDetached).
      await Promise.all(this.#released);
    } finally {
      await Deno.remove(this.#profile, { recursive: true });
    }
  }
}

/**
 * Resolves once puppeteer detaches the page's main frame, which is the last thing it does for a
 * page whose session ended (closed, or the browser gone).
 *
 * When a session ends while the browser connection is still open, puppeteer's frame manager waits
 * up to 100 ms on a timer for a swapped-in frame before it detaches the old one. `Page.close()` and
 * `Browser.close()` return without waiting for it, so when Deno reads Chromium's last messages late
 * (a loaded machine), that timer is still running when the test ends: Deno's sanitizer fails the
 * test ("started in this test, but never completed"), and then the next one ("started before the
 * test, but completed during the test"). Awaiting this lets the timer finish inside its own test.
 * Call it right after creating the page: the main frame keeps its identity across navigations.
 */
function mainFrameDetached(page: Page): Promise<void> {
  const main = page.mainFrame();
  if (main.detached) return Promise.resolve();
  return new Promise((resolve) => {
    const onDetached = (frame: Frame) => {
      if (frame !== main) return;
      page.off("framedetached", onDetached);
      resolve();
    };
    page.on("framedetached", onDetached);
  });
}

/** One user's chat page, with what it received and any dialogs or errors it raised. */
export class ChatPage {
  readonly page: Page;
  readonly name: string;
  /** Payloads of every WebSocket text frame the page received, across reconnects. */
  readonly frames: string[] = [];
  /** Messages of every dialog (`alert`, `confirm`, …) the page opened; each is dismissed. */
  readonly dialogs: string[] = [];
  /** Uncaught exceptions in the page. */
  readonly errors: string[] = [];

  private constructor(page: Page, name: string) {
    this.page = page;
    this.name = name;
  }

  /** Starts recording a page's frames, dialogs and errors; call before navigating. */
  static async attach(page: Page, name: string): Promise<ChatPage> {
    const chat = new ChatPage(page, name);
    page.on("dialog", (dialog) => {
      chat.dialogs.push(dialog.message());
      dialog.dismiss().catch(() => {});
    });
    page.on("pageerror", (error) => chat.errors.push(String(error)));
    const cdp = await page.createCDPSession();
    cdp.on("Network.webSocketFrameReceived", (event) => {
      chat.frames.push(event.response.payloadData);
    });
    await cdp.send("Network.enable");
    return chat;
  }

  /** Waits until an in-page predicate holds, polling (background pages get no animation frames). */
  async waitFor<Args extends unknown[]>(
    what: string,
    predicate: EvaluateFunc<Args>,
    ...args: Args
  ): Promise<void> {
    try {
      await this.page.waitForFunction(predicate, { timeout: WAIT_MS, polling: 50 }, ...args);
    } catch (error) {
      throw new Error(`${this.name}: timed out waiting for ${what}`, { cause: error });
    }
  }

  /** Waits until the connection status shows a state (`online`, `reconnecting`, …). */
  async waitForStatus(state: string): Promise<void> {
    await this.waitFor(
      `status "${state}"`,
      (state) => document.querySelector("[data-testid=status]")?.dataset.state === state,
      state,
    );
  }

  /** Waits until a message with this content is confirmed (has an id) in the list. */
  async waitForMessage(content: string): Promise<void> {
    await this.waitFor(`message ${JSON.stringify(content)}`, (content) => {
      for (const row of document.querySelectorAll("[data-testid=message]")) {
        const text = row.querySelector(".content")?.textContent;
        if (text === content && row.dataset.pending === "false") return true;
      }
      return false;
    }, content);
  }

  /**
   * Starts recording, in the page, each state the connection status takes (`data-state`),
   * starting with the current one; read them with {@link ChatPage.statusTrace}.
   */
  async traceStatus(): Promise<void> {
    await this.page.evaluate(() => {
      const status = document.querySelector("[data-testid=status]")!;
      const states: string[] = [];
      const record = () => {
        const state = status.dataset.state ?? "";
        if (states.at(-1) !== state) states.push(state);
      };
      record();
      new MutationObserver(record).observe(status, { attributes: true });
      Reflect.set(globalThis, "parleyStatusTrace", states);
    });
  }

  /** The states recorded since {@link ChatPage.traceStatus}. */
  statusTrace(): Promise<string[]> {
    return this.page.evaluate(() => Reflect.get(globalThis, "parleyStatusTrace") as string[]);
  }

  /**
   * Starts recording, in the page, each state that rows with this content take: `pending`, or
   * `confirmed:<id>`; read them with {@link ChatPage.messageTrace}.
   */
  async traceMessage(content: string): Promise<void> {
    await this.page.evaluate((content) => {
      const list = document.querySelector("[data-testid=message-list]")!;
      const states: string[] = [];
      new MutationObserver(() => {
        for (const row of list.querySelectorAll("[data-testid=message]")) {
          if (row.querySelector(".content")?.textContent !== content) continue;
          const state = row.dataset.pending === "true" ? "pending" : `confirmed:${row.dataset.id}`;
          if (states.at(-1) !== state) states.push(state);
        }
      }).observe(list, { attributes: true, childList: true, subtree: true });
      Reflect.set(globalThis, "parleyMessageTrace", states);
    }, content);
  }

  /** The states recorded since {@link ChatPage.traceMessage}. */
  messageTrace(): Promise<string[]> {
    return this.page.evaluate(() => Reflect.get(globalThis, "parleyMessageTrace") as string[]);
  }

  /** The message list as rendered, top to bottom. */
  messages(): Promise<RenderedMessage[]> {
    return this.page.evaluate(() =>
      [...document.querySelectorAll("[data-testid=message-list] [data-testid=message]")].map(
        (row) => ({
          id: row.dataset.id ?? "",
          pending: row.dataset.pending === "true",
          sender: row.dataset.sender ?? "",
          content: row.querySelector(".content")?.textContent ?? "",
        }),
      )
    );
  }

  /** The text of the element with that `data-testid`, or null when there is none. */
  text(testid: string): Promise<string | null> {
    return this.page.evaluate(
      (testid) => document.querySelector(`[data-testid=${testid}]`)?.textContent ?? null,
      testid,
    );
  }

  /** Types into the composer (focusing it first), without sending. */
  async type(text: string): Promise<void> {
    await this.page.type("[data-testid=composer]", text);
  }

  /** Types a message into the composer and sends it with Enter. */
  async send(text: string): Promise<void> {
    await this.type(text);
    await this.page.keyboard.press("Enter");
  }

  /** Clicks the element matching a selector. */
  async click(selector: string): Promise<void> {
    await this.page.locator(selector).setTimeout(WAIT_MS).click();
  }
}

let shots: Promise<string> | undefined;

/**
 * Saves a screenshot of the page as `<label>.png` in this run's screenshot directory (one temp
 * directory per process, kept for people to look at) and prints its path.
 */
export async function screenshot(chat: ChatPage, label: string): Promise<string> {
  shots ??= Deno.makeTempDir({ prefix: "parley-screenshots-" });
  const path = `${await shots}/${label}.png`;
  await chat.page.bringToFront();
  await chat.page.screenshot({ path: path as `${string}.png` });
  console.log(`screenshot: ${path}`);
  return path;
}
