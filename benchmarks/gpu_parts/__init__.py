"""The parts of ``benchmarks/gpu_suite.py`` (one module per part, plus the shared timing and model builders).

* :mod:`.settings` – the real (GPU) and dry-run (CPU, tiny presets) settings;
* :mod:`.runner` – each part in its own process (forkserver), with a time cap;
* :mod:`.timing` – synchronised timing, peak memory, the batch-size sweep, torch.profiler top ops;
* :mod:`.record` – :class:`~.record.Recorder`: a part's figures and step times, saved after every step;
* :mod:`.models` – random-weight segmenters of each backend (also the factories ``segearth-geo serve`` loads);
* :mod:`.backends` – SegEarth-R2, SegEarth-R1 and SAM3: sweep, batch 1, naive loop, re-prompt, profiles;
* :mod:`.scene` – the generated georeferenced scene (tiled, compressed) and its buildings as masks;
* :mod:`.engine` – ``segment_raster`` on that scene and its CPU side;
* :mod:`.serving` – in-process vs through ``segearth-geo serve``;
* :mod:`.report` – the targets and the Markdown tables.
"""
