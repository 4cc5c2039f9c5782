"""The application layer over the hf-margin core: the ``hf-margin`` command, recipe arguments, tasks (STS-B),
teacher training and launching. The core (``hf_margin.*`` outside this package) never imports it."""
