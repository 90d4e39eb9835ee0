// hpchub's spawn form: a profile fills in the resource fields (and locks some of them), a
// partition sets their upper limits and the GPU types and node features on offer, an
// account the QOS it allows. Option names come from the page (data-options, data-limits,
// data-preset, data-locked: the server's vocabulary, hpchub_config/options.py); every
// value is checked again on the server. The page is usable without this script.
(function () {
  "use strict";
  const form = document.getElementById("hpchub-options");
  if (!form) {
    return;
  }
  const profile = form.querySelector("[name=profile]");
  const partition = form.querySelector("[name=partition]");
  const account = form.querySelector("[name=account]");
  const optionNames = JSON.parse(form.dataset.options);
  const limits = JSON.parse(form.dataset.limits);

  function field(name) {
    return form.querySelector(`[name="${name}"]`);
  }

  function chosenProfile() {
    return profile.options[profile.selectedIndex];
  }

  function setLimits() {
    const partitionLimits = partition ? limits[partition.value] || {} : {};
    for (const [name, max] of Object.entries(partitionLimits)) {
      const input = field(name);
      if (input) {
        input.max = max;
      }
    }
  }

  // Hide the choices that do not apply (another partition's GPU types, another account's
  // QOS); a hidden choice that was selected falls back to the first (the default).
  function filter(select, fits) {
    if (!select) {
      return;
    }
    for (const option of select.options) {
      const hide = option.value !== "" && !fits(option);
      option.hidden = hide;
      option.disabled = hide;
    }
    if (select.selectedOptions.length && select.selectedOptions[0].disabled) {
      select.selectedIndex = 0;
    }
  }

  function filterChoices() {
    for (const select of form.querySelectorAll("select")) {
      if (select.querySelector("option[data-partitions]") && partition) {
        filter(select, (o) => JSON.parse(o.dataset.partitions).includes(partition.value));
      }
      if (select.querySelector("option[data-account]") && account) {
        filter(select, (o) =>
          account.value === ""
            ? o.dataset.defaultAccount === "true"
            : o.dataset.account === account.value,
        );
      }
    }
  }

  function setLocks() {
    const locked = JSON.parse(chosenProfile().dataset.locked || "[]");
    for (const name of optionNames) {
      const input = field(name);
      if (!input) {
        continue;
      }
      const isLocked = locked.includes(name);
      // A locked select is disabled (not sent: the server uses the profile's value); a
      // locked number is read-only (sent unchanged).
      if (input.tagName === "SELECT") {
        input.disabled = isLocked;
      } else {
        input.readOnly = isLocked;
      }
      input.setAttribute("aria-readonly", isLocked ? "true" : "false");
    }
  }

  function applyProfile() {
    const preset = JSON.parse(chosenProfile().dataset.preset);
    for (const name of optionNames) {
      const input = field(name);
      if (input && name in preset) {
        input.value = preset[name];
        if (input.tagName === "SELECT" && input.selectedIndex < 0) {
          input.selectedIndex = 0;
        }
      }
    }
    refresh();
  }

  function refresh() {
    setLimits();
    filterChoices();
    setLocks();
  }

  profile.addEventListener("change", applyProfile);
  for (const select of [partition, account]) {
    if (select) {
      select.addEventListener("change", refresh);
    }
  }
  // The server filled in the values (the profile's, remembered ones or a link's).
  refresh();
})();
