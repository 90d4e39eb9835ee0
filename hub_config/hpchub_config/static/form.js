// hpchub's spawn form: a profile fills in the resource fields, a partition sets their
// upper limits. Option names come from the page (data-options, data-limits: the server's
// vocabulary, hpchub_config/options.py); every value is checked again on the server.
(function () {
  "use strict";
  const form = document.getElementById("hpchub-options");
  if (!form) {
    return;
  }
  const profile = form.querySelector("[name=profile]");
  const partition = form.querySelector("[name=partition]");
  const optionNames = JSON.parse(form.dataset.options);
  const limits = JSON.parse(form.dataset.limits);

  function field(name) {
    return form.querySelector(`[name="${name}"]`);
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

  function applyProfile() {
    const preset = JSON.parse(profile.options[profile.selectedIndex].dataset.preset);
    for (const name of optionNames) {
      const input = field(name);
      if (input && name in preset && preset[name] !== "") {
        input.value = preset[name];
      }
    }
    setLimits();
  }

  profile.addEventListener("change", applyProfile);
  if (partition) {
    partition.addEventListener("change", setLimits);
  }
  applyProfile();
})();
