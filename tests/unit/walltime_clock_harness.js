// Loads a prebuilt JupyterLab extension the way JupyterLab's loader does (run its
// remoteEntry, init the container with the shared modules, get "./extension", activate
// the default export), against a fake JupyterLab; prints what the plugin did as JSON.
// Usage: node walltime_clock_harness.js REMOTE_ENTRY PAGE_CONFIG_JSON NOW_UNIX_TIME
"use strict";
const vm = require("vm");
const fs = require("fs");
const [source, config, now] = [
  fs.readFileSync(process.argv[2], "utf8"),
  process.argv[3],
  Number(process.argv[4]),
];

class Widget {
  constructor() {
    this.node = { style: {}, attrs: {}, textContent: "", title: "" };
    this.node.setAttribute = (k, v) => (this.node.attrs[k] = v);
    this.classes = new Set();
  }
  addClass(c) {
    this.classes.add(c);
  }
  toggleClass(c, on) {
    if (on) this.classes.add(c);
    else this.classes.delete(c);
  }
}
const window = {};
const added = [];
const notes = [];
const timers = [];
const document = {
  getElementById: (id) => (id === "jupyter-config-data" ? { textContent: config } : null),
};
const FixedDate = class extends Date {
  static now() {
    return now * 1000;
  }
};
const sandbox = { window, document, Date: FixedDate, setInterval: (f) => timers.push(f) };
vm.runInNewContext(source, sandbox);

(async () => {
  const container = window._JUPYTERLAB["hpchub-walltime"];
  const widgets = { get: () => Promise.resolve(() => ({ Widget })) };
  await container.init({ "@lumino/widgets": { "2.7.1": widgets } });
  const plugin = (await container.get("./extension"))().default;
  const app = {
    shell: { add: (widget, area) => added.push({ widget, area }) },
    commands: {
      hasCommand: (id) => id === "apputils:notify",
      execute: (id, args) => {
        notes.push({ id, args });
        return Promise.resolve();
      },
    },
  };
  await plugin.activate(app);
  const shown = added.map(({ widget, area }) => ({
    id: widget.id,
    area,
    text: widget.node.textContent,
    classes: [...widget.classes],
  }));
  const out = { id: plugin.id, autoStart: plugin.autoStart, added: shown, notes };
  console.log(JSON.stringify({ ...out, timers: timers.length }));
})();
