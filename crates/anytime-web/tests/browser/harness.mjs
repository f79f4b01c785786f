// Test harness: a real `anytime serve` on loopback serving the built web client, Debian's
// Chromium driven by playwright-core, and the `anytime` CLI for cross-client tests.

import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = fileURLToPath(new URL(".", import.meta.url));
const workspace = resolve(here, "../../../..");
export const BIN = process.env.ANYTIME_BIN || join(workspace, "target/debug/anytime");
export const WEB_DIR = process.env.ANYTIME_WEB_DIR || join(workspace, "target/web/dist");
export const ARTIFACTS = process.env.ANYTIME_ARTIFACTS || join(workspace, "target/browser-artifacts");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";

export const PHONE = { width: 390, height: 844 };
export const DESKTOP = { width: 1280, height: 800 };

export async function startServer() {
  const data = mkdtempSync(join(tmpdir(), "anytime-browser-"));
  let { child, url } = await spawnServer(data, "127.0.0.1:0");
  return {
    get url() { return url; },
    /** SIGKILL, then start again on the same address and data: a crash and a restart. */
    async crashAndRestart() {
      const exited = new Promise((ok) => child.once("exit", ok));
      child.kill("SIGKILL");
      await exited;
      ({ child, url } = await spawnServer(data, url.replace("http://", "")));
    },
    /** SIGKILL and stay down until `restart()`. */
    async crash() {
      const exited = new Promise((ok) => child.once("exit", ok));
      child.kill("SIGKILL");
      await exited;
    },
    async restart() {
      ({ child, url } = await spawnServer(data, url.replace("http://", "")));
    },
    stop() { child.kill("SIGTERM"); rmSync(data, { recursive: true, force: true }); },
    /** Whether any stored attachment (data/blobs/…) contains `bytes`. */
    blobsContain(bytes) {
      const dir = join(data, "blobs");
      if (!existsSync(dir)) return false;
      return readdirSync(dir).some((shard) =>
        readdirSync(join(dir, shard)).some((name) => readFileSync(join(dir, shard, name)).includes(bytes)));
    },
    /** Whether any file of the server's data directory (database, WAL) contains `text`. */
    databaseContains(text) {
      const needle = Buffer.from(text);
      return readdirSync(data, { withFileTypes: true })
        .some((e) => e.isFile() && readFileSync(join(data, e.name)).includes(needle));
    },
  };
}

async function spawnServer(data, listen) {
  const child = spawn(BIN, ["serve", "--listen", listen, "--data", data, "--web-dir", WEB_DIR,
    "--no-rate-limits", "--argon2-memory-kib", "1024", "--argon2-iterations", "1"], { stdio: ["ignore", "pipe", "inherit"] });
  const url = await new Promise((ok, fail) => {
    let seen = "";
    const timer = setTimeout(() => fail(new Error(`server did not start: ${seen}`)), 30_000);
    child.stdout.on("data", (chunk) => {
      seen += chunk;
      const match = seen.match(/running at (http:\/\/[^\s/]+)\//);
      if (match) { clearTimeout(timer); ok(match[1]); }
    });
    child.on("exit", (code) => fail(new Error(`server exited with ${code}: ${seen}`)));
  });
  return { child, url };
}

export async function launchBrowser() {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-dev-shm-usage"],
  });
}

/** A browser context (its own IndexedDB: one device) with a page on the app. */
export async function openDevice(browser, url, viewport = DESKTOP) {
  const context = await browser.newContext({ viewport, acceptDownloads: true });
  const page = await context.newPage();
  page.on("dialog", (d) => d.accept());
  page.on("pageerror", (e) => console.error("page error:", e.message));
  await page.goto(url);
  return page;
}

export async function signUp(page, username, password = `password-${username}`) {
  await page.getByLabel("Username").fill(username);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Sign up" }).click();
  await page.getByRole("navigation", { name: "Chats" }).waitFor();
  await waitOnline(page);
}

export async function waitOnline(page) {
  await page.waitForFunction(() => window.anytime && window.anytime.status() === "online", null, { timeout: 30_000 });
}

export async function screenshot(page, name) {
  mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: join(ARTIFACTS, `${name}.png`) });
}

/** Runs the CLI with --json; returns the parsed lines. Throws with its stderr when it fails. */
export function cli(profile, ...args) {
  const out = spawnSync(BIN, ["--profile", profile, "--json", ...args], { encoding: "utf8", timeout: 60_000 });
  if (out.status !== 0) throw new Error(`anytime ${args.join(" ")} failed: ${out.stderr}`);
  return out.stdout.split("\n").filter(Boolean).map((line) => JSON.parse(line));
}

/** Runs the CLI with --json without blocking the test; resolves to the parsed lines. */
export function cliAsync(profile, ...args) {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(BIN, ["--profile", profile, "--json", ...args], { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stdout.on("data", (d) => { out += d; });
    child.stderr.on("data", (d) => { err += d; });
    child.on("close", (code) => {
      if (code !== 0) reject(new Error(`anytime ${args.join(" ")} failed (${code}): ${err}`));
      else resolvePromise(out.split("\n").filter(Boolean).map((line) => JSON.parse(line)));
    });
  });
}

/** Starts a long-running CLI command (`follow`); `lines()` is what it printed so far. */
export function cliBackground(profile, ...args) {
  const child = spawn(BIN, ["--profile", profile, "--json", ...args], { stdio: ["ignore", "pipe", "inherit"] });
  let out = "";
  child.stdout.on("data", (d) => { out += d; });
  return {
    lines: () => out.split("\n").filter(Boolean).map((line) => JSON.parse(line)),
    stop: () => child.kill("SIGKILL"),
  };
}

export function tempProfile() {
  return mkdtempSync(join(tmpdir(), "anytime-cli-profile-"));
}

/** Every form control has an accessible name; every button has one too. Returns offenders. */
export async function unlabelled(page) {
  return page.evaluate(() => {
    const bad = [];
    for (const el of document.querySelectorAll("input:not([type=hidden]), textarea, select")) {
      const labelled = (el.id && document.querySelector(`label[for="${el.id}"]`)) || el.closest("label") || el.getAttribute("aria-label");
      if (!labelled) bad.push(el.outerHTML.slice(0, 80));
    }
    for (const el of document.querySelectorAll("button")) {
      if (!(el.textContent.trim() || el.getAttribute("aria-label"))) bad.push(el.outerHTML.slice(0, 80));
    }
    return bad;
  });
}
