// Drives headless Chromium (Debian's /usr/bin/chromium, through playwright-core,
// which downloads no browser) over an iocomp directory listing; run by
// crates/iocomp-cli/tests/cli/browser.rs.
//
//   node listing.mjs URL SCREENSHOT SPEC
//
// URL: the listing (a directory URL ending in `/`). SCREENSHOT: where to write
// a PNG of the listing. SPEC: JSON `[{"name": …, "marker": …}, …]`, one entry
// per file in the directory; `marker` is the file's whole content.
//
// For every file it checks that the name is displayed as text (as a link
// whose visible text is the name, whitespace collapsed as HTML does), clicks
// that link by its visible text, and records where the browser went and what
// it shows. It prints one JSON summary on stdout (also when something throws,
// with `error` set) and exits 0 when every check passed, 1 otherwise. The
// summary holds the raw observations, so the Rust test asserts on them too.
//
// Chromium: $IOCOMP_CHROMIUM, or /usr/bin/chromium. It starts with a fresh
// --user-data-dir under $TMPDIR (removed afterwards; the Rust test points
// TMPDIR into its own temporary tree) and without background networking.

import { executablePath, launch } from "./launch.mjs";

const [url, screenshot, specJson] = process.argv.slice(2);
if (!url || !screenshot || !specJson) {
  console.error("usage: node listing.mjs URL SCREENSHOT SPEC_JSON");
  process.exit(2);
}
const spec = JSON.parse(specJson);
const origin = new URL(url).origin;

// What the browser displays for a name: the listing shows each control
// character as its control picture (U+2400 + byte, U+2421 for DEL), so a
// newline cannot pass for a space; runs of spaces then collapse to one.
const displayed = (name) =>
  name
    .replace(/[\x00-\x1f]/g, (c) => String.fromCharCode(0x2400 + c.charCodeAt(0)))
    .replace(/\x7f/g, "\u2421")
    .replace(/ +/g, " ");

const summary = {
  url,
  executablePath,
  browserVersion: null,
  listing: null,
  files: [],
  foreignRequests: [],
  consoleErrors: [],
  pageErrors: [],
  failures: [],
  error: null,
};
const fail = (msg) => summary.failures.push(msg);

let browser = null;
try {
  // The listing has no scripts, styles or images of its own and the status
  // page none from elsewhere: anything fetched off the server is a bug.
  browser = await launch(origin, summary, { width: 1000, height: 600 });
  const { page } = browser;
  page.on("console", (m) => {
    if (m.type() === "error") summary.consoleErrors.push(m.text());
  });

  const open = async () => {
    const resp = await page.goto(url, { waitUntil: "load" });
    if (!resp || resp.status() !== 200) {
      throw new Error(`GET ${url}: status ${resp?.status()}`);
    }
    return resp;
  };

  const resp = await open();
  const links = await page.$$eval("tbody a", (as) =>
    as.map((a) => ({
      text: a.textContent,
      innerText: a.innerText,
      href: a.getAttribute("href"),
      resolved: a.href,
    })),
  );
  summary.listing = {
    status: resp.status(),
    contentType: resp.headers()["content-type"] ?? null,
    title: await page.title(),
    bodyText: await page.evaluate(() => document.body.innerText),
    links,
    // Markup inside a name must stay text: no element may come from a name.
    injectedElements: await page.evaluate(
      () => document.querySelectorAll("tbody b, tbody script, tbody img").length,
    ),
    scripts: await page.evaluate(() => document.scripts.length),
  };
  await page.screenshot({ path: screenshot, fullPage: true });

  for (const { name, marker } of spec) {
    const shown = displayed(name);
    const r = {
      name,
      displayed: shown,
      inBodyText: summary.listing.bodyText.includes(shown),
      matchingLinks: 0,
      visible: false,
      linkText: null,
      href: null,
      finalUrl: null,
      decodedLastSegment: null,
      status: null,
      contentType: null,
      pre: false,
      text: null,
      ok: false,
    };
    summary.files.push(r);
    if (page.url() !== url) await open();
    const link = page.getByRole("link", { name: shown, exact: true });
    r.matchingLinks = await link.count();
    if (r.matchingLinks !== 1) {
      fail(`${JSON.stringify(name)}: ${r.matchingLinks} links named ${JSON.stringify(shown)}`);
      continue;
    }
    r.visible = await link.isVisible();
    r.linkText = await link.innerText();
    r.href = await link.getAttribute("href");
    const navigated = page.waitForResponse(
      (res) => res.request().isNavigationRequest() && res.frame() === page.mainFrame(),
    );
    await link.click();
    const res = await navigated;
    await page.waitForLoadState("load");
    r.status = res.status();
    r.contentType = res.headers()["content-type"] ?? null;
    r.finalUrl = page.url();
    const path = new URL(r.finalUrl).pathname;
    try {
      r.decodedLastSegment = decodeURIComponent(path.slice(path.lastIndexOf("/") + 1));
    } catch (e) {
      r.decodedLastSegment = `undecodable: ${e}`;
    }
    // A text/plain document is shown by Chromium as <pre> in the body.
    const pre = page.locator("body > pre");
    r.pre = (await pre.count()) === 1;
    r.text = r.pre
      ? await pre.textContent()
      : await page.evaluate(() => document.body?.innerText ?? null);
    r.ok =
      r.inBodyText &&
      r.visible &&
      r.status === 200 &&
      r.decodedLastSegment === name &&
      r.text === marker;
    if (!r.ok) fail(`${JSON.stringify(name)}: ${JSON.stringify(r)}`);
  }
} catch (e) {
  summary.error = String(e?.stack ?? e);
} finally {
  if (browser) await browser.close();
}

if (summary.foreignRequests.length) fail(`requests off the server: ${summary.foreignRequests}`);
if (summary.pageErrors.length) fail(`page errors: ${summary.pageErrors}`);
process.stdout.write(JSON.stringify(summary) + "\n");
process.exit(summary.error === null && summary.failures.length === 0 ? 0 : 1);
