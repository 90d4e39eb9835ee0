// hpchub-walltime: the notebook job's remaining walltime in JupyterLab's top bar, and a
// warning (a JupyterLab notification) a configurable time before the job ends.
//
// A prebuilt JupyterLab 4 extension written as plain JavaScript, so that deploying it needs
// no Node.js toolchain: this file is the container JupyterLab's loader expects of every
// prebuilt ("federated") extension: window._JUPYTERLAB[name] with init(sharedModules) and
// get("./extension") -> a factory of the module whose default export is the plugin.
// The only module it uses, @lumino/widgets, comes from JupyterLab's shared modules.
//
// The job's end comes from the page configuration: the batch script exports HPCHUB_JOB_END
// (Unix time, from squeue) and HPCHUB_WALLTIME_WARNING_MINUTES, and the notebook
// environment's jupyter_server_config.py puts them into JupyterLab's page_config_data.
(function () {
  "use strict";
  const NAME = "hpchub-walltime";
  let sharedModules = {};

  async function shared(name) {
    const versions = sharedModules[name] || {};
    const version = Object.keys(versions).sort().pop();
    if (!version) throw new Error(NAME + ": JupyterLab shares no " + name);
    let factory = versions[version].get();
    if (factory && typeof factory.then === "function") factory = await factory;
    return factory();
  }

  function pageConfig() {
    const element = document.getElementById("jupyter-config-data");
    try {
      return element ? JSON.parse(element.textContent) : {};
    } catch (e) {
      return {};
    }
  }

  function duration(seconds) {
    seconds = Math.max(0, Math.floor(seconds));
    const hours = Math.floor(seconds / 3600);
    const minutes = Math.floor((seconds % 3600) / 60);
    const rest = seconds % 60;
    if (hours) return hours + " h " + String(minutes).padStart(2, "0") + " min";
    if (minutes >= 10) return minutes + " min";
    return minutes + " min " + String(rest).padStart(2, "0") + " s";
  }

  const plugin = {
    id: NAME + ":clock",
    description: "The notebook job's remaining walltime, and a warning before it ends.",
    autoStart: true,
    activate: async function (app) {
      const config = pageConfig();
      const end = Number(config.hpchubJobEnd);
      if (!end) return; // not a notebook job of hpchub's
      const warnSeconds = 60 * Number(config.hpchubWalltimeWarningMinutes || 0);
      const { Widget } = await shared("@lumino/widgets");
      const clock = new Widget();
      clock.id = "hpchub-walltime";
      clock.addClass("hpchub-walltime");
      clock.node.setAttribute("role", "timer");
      clock.node.title =
        "This notebook server is a Slurm job; it stops when its walltime ends, at " +
        new Date(end * 1000).toLocaleString() + ".";
      clock.node.style.cssText =
        "display:flex;align-items:center;padding:0 8px;white-space:nowrap;" +
        "font-size:var(--jp-ui-font-size1);color:var(--jp-ui-font-color1);";
      app.shell.add(clock, "top", { rank: 900 });
      let warned = false;
      function update() {
        const left = end - Date.now() / 1000;
        clock.node.textContent = "Walltime left: " + duration(left);
        const warning = warnSeconds > 0 && left <= warnSeconds;
        clock.node.style.background = warning ? "var(--jp-warn-color3)" : "";
        clock.toggleClass("hpchub-walltime-warning", warning);
        if (warning && !warned && app.commands.hasCommand("apputils:notify")) {
          warned = true;
          app.commands
            .execute("apputils:notify", {
              message:
                "Your notebook job ends in " + duration(left) +
                " (its walltime): save your work, the server stops then.",
              type: "warning",
              options: { autoClose: false },
            })
            .catch(function () {
              warned = false; // try again at the next tick
            });
        }
      }
      update();
      setInterval(update, 1000);
    },
  };

  window._JUPYTERLAB = window._JUPYTERLAB || {};
  window._JUPYTERLAB[NAME] = {
    init: function (scope) {
      sharedModules = scope || {};
    },
    get: function (module) {
      if (module !== "./extension") {
        return Promise.reject(new Error(NAME + " has no module " + module));
      }
      return Promise.resolve(function () {
        return { __esModule: true, default: plugin };
      });
    },
  };
})();
