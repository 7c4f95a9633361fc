// A stock Debian `firefox-esr`, headless, driven through its built-in WebDriver BiDi (no
// geckodriver): launched with a throwaway profile whose prefs only grant fake camera and
// microphone (ICE prefs stay at Firefox's defaults), stopped by PID.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import WebSocket from 'ws';

export const firefoxBinary = process.env.FIREFOX ?? '/usr/bin/firefox-esr';

// Fake devices without a permission prompt. `permission.fake` matters: without it a page that
// only has fake devices gathers only default-route candidates.
const PREFS = {
  'media.navigator.streams.fake': true,
  'media.navigator.permission.disabled': true,
  'media.navigator.permission.fake': true,
  // Quiet, fast start: no first-run pages, updates or telemetry.
  'browser.shell.checkDefaultBrowser': false,
  'browser.startup.homepage_override.mstone': 'ignore',
  'datareporting.policy.dataSubmissionEnabled': false,
  'app.update.auto': false,
  'toolkit.telemetry.reportingpolicy.firstRun': false,
};

// Camera and microphone on plain-http origins (other than localhost): what a page served by
// `mooyaho dev` on a LAN address needs unless TLS is put in front.
const INSECURE_MEDIA_PREFS = {
  'media.devices.insecure.enabled': true,
  'media.getusermedia.insecure.enabled': true,
};

/**
 * Launches Firefox and opens a BiDi session on its one tab; `insecureOrigins` lets plain-http
 * pages use the (fake) camera.
 */
export async function launchFirefox({ insecureOrigins = false } = {}) {
  const profile = mkdtempSync(join(tmpdir(), 'mooyaho-firefox-'));
  const prefs = { ...PREFS, ...(insecureOrigins ? INSECURE_MEDIA_PREFS : {}) };
  writeFileSync(join(profile, 'user.js'), Object.entries(prefs).map(([k, v]) => `user_pref(${JSON.stringify(k)}, ${JSON.stringify(v)});\n`).join(''));
  const child = spawn(firefoxBinary, ['--headless', '--no-remote', '--profile', profile, '--remote-debugging-port=0'], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, MOZ_CRASHREPORTER_DISABLE: '1' },
  });
  let log = '';
  const endpoint = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`firefox did not start BiDi:\n${log}`)), 60_000);
    child.on('exit', (code) => reject(new Error(`firefox exited with ${code}:\n${log}`)));
    const read = (d) => {
      log += d;
      const url = /WebDriver BiDi listening on (ws:\/\/\S+)/.exec(log)?.[1];
      if (url) {
        clearTimeout(timer);
        resolve(url);
      }
    };
    child.stdout.on('data', read);
    child.stderr.on('data', read);
  });
  const socket = new WebSocket(`${endpoint}/session`);
  await new Promise((resolve, reject) => { socket.once('open', resolve); socket.once('error', reject); });
  const bidi = new Bidi(socket);
  await bidi.send('session.new', { capabilities: { alwaysMatch: { acceptInsecureCerts: true } } });
  const tree = await bidi.send('browsingContext.getTree', {});
  const context = tree.contexts[0].context;
  return {
    log: () => log,
    /** Loads `url` in the tab and waits for its load event. */
    goto: (url) => bidi.send('browsingContext.navigate', { context, url, wait: 'complete' }),
    /**
     * Runs `fn(arg)` in the page (awaiting a promise it returns); its result travels as JSON,
     * so return plain data.
     */
    async evaluate(fn, arg) {
      const result = await bidi.send('script.callFunction', {
        functionDeclaration: `async (json) => JSON.stringify((await (${fn.toString()})(JSON.parse(json))) ?? null)`,
        arguments: [{ type: 'string', value: JSON.stringify(arg ?? null) }],
        target: { context },
        awaitPromise: true,
        resultOwnership: 'none',
      });
      if (result.type === 'exception') {
        throw new Error(`firefox page threw: ${result.exceptionDetails?.text ?? JSON.stringify(result.exceptionDetails)}`);
      }
      return JSON.parse(result.result.value);
    },
    async close() {
      await bidi.send('session.end', {}).catch(() => {});
      socket.close();
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        process.kill(child.pid, 'SIGTERM');
        await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
        if (child.exitCode === null && child.signalCode === null) process.kill(child.pid, 'SIGKILL');
      }
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

/** Commands and their replies over one BiDi WebSocket (events are ignored). */
class Bidi {
  constructor(socket) {
    this.socket = socket;
    this.next = 1;
    this.pending = new Map();
    socket.on('message', (data) => {
      const message = JSON.parse(data.toString());
      const waiter = message.id !== undefined && this.pending.get(message.id);
      if (!waiter) return;
      this.pending.delete(message.id);
      if (message.type === 'error') waiter.reject(new Error(`${message.error}: ${message.message}`));
      else waiter.resolve(message.result);
    });
    socket.on('close', () => {
      for (const waiter of this.pending.values()) waiter.reject(new Error('BiDi socket closed'));
      this.pending.clear();
    });
  }

  send(method, params) {
    const id = this.next++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.socket.send(JSON.stringify({ id, method, params }));
    });
  }
}
