// The Chromium start shared by the browser scripts: Debian's /usr/bin/chromium
// (or $IOCOMP_CHROMIUM) through playwright-core, which downloads no browser;
// headless, without background networking, with a fresh --user-data-dir under
// $TMPDIR. Any request the page makes off `origin` is recorded in
// `summary.foreignRequests` and refused.

import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export const executablePath = process.env.IOCOMP_CHROMIUM || "/usr/bin/chromium";

// Starts the browser; returns { context, page, close }. `close` shuts it down
// and removes the profile directory, whatever happened.
export async function launch(origin, summary, viewport) {
  const userDataDir = mkdtempSync(join(tmpdir(), "iocomp-chromium-"));
  let context = null;
  const close = async () => {
    if (context) await context.close().catch(() => {});
    rmSync(userDataDir, { recursive: true, force: true });
  };
  try {
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath,
      headless: true,
      timeout: 30_000,
      viewport,
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--no-first-run",
        "--disable-component-update",
        "--disable-sync",
        "--disable-quic",
      ],
    });
    summary.browserVersion = context.browser()?.version() ?? null;
    context.setDefaultTimeout(15_000);
    context.setDefaultNavigationTimeout(15_000);
    await context.route("**/*", (route) => {
      const u = route.request().url();
      if (u.startsWith(origin + "/")) return route.continue();
      summary.foreignRequests.push(u);
      return route.abort();
    });
    const page = context.pages()[0] ?? (await context.newPage());
    page.on("pageerror", (e) => summary.pageErrors.push(String(e)));
    return { context, page, close };
  } catch (e) {
    await close();
    throw e;
  }
}
