# The two commands a new machine needs: `make run` and `make test`.
.PHONY: run test send-example demo tasks chaos lint typecheck bench-ingest bench-pipeline bench-processor bench-chaos bench-console bench-replay kafka clean

PYTHON := .venv/bin/python

run: ## set up, then run the whole pipeline locally (Ctrl-C stops it)
	@scripts/bootstrap.sh
	@$(PYTHON) -m devenv.pipeline

test: ## set up, then run the full test suite against a real Kafka broker
	@scripts/bootstrap.sh --test
	@$(PYTHON) -m pytest $(PYTEST_ARGS)

send-example: ## POST a sample callback to the running ingest
	@$(PYTHON) -m devenv.send_example $(ARGS)

demo: ## on a running `make run`: three tasks (delivered, lost and recovered by polling, failed)
	@$(PYTHON) -m devenv.demo $(ARGS)

tasks: ## the tracker's tasks and their states (on a running `make run`)
	@DATABASE_URL=$$(.venv/bin/python -c 'import json; print(json.load(open("data/local-run.json"))["database"])') $(PYTHON) -m services.tracker tasks $(ARGS)

chaos: ## one chaos run (about 3 minutes): every part killed in turn, then the ledger
	@scripts/bootstrap.sh --test
	@$(PYTHON) -m devenv.chaos $(ARGS)

kafka: ## only a local Kafka broker on 127.0.0.1:9092
	@scripts/bootstrap.sh
	@$(PYTHON) -m devenv.kafka

bench-ingest: ## full ingest path vs a bare aiohttp handler and the provider page's Flask receiver under wrk (prints ratios)
	@scripts/bootstrap.sh --bench
	@$(PYTHON) -m bench.ingest.run $(ARGS)

bench-pipeline: ## the whole pipeline's sustained rate vs the ingest alone; send to MIDI file p99 at half of it
	@scripts/bootstrap.sh --bench
	@$(PYTHON) -m bench.pipeline.run $(ARGS)

bench-processor: ## the processor's path vs symusic and pretty_midi; the loop stall; the beat estimator vs the renderer (prints ratios)
	@scripts/bootstrap.sh
	@$(PYTHON) -m bench.processor.bench
	@$(PYTHON) -m bench.processor.loop_stall
	@$(PYTHON) -m bench.processor.beats

bench-chaos: ## the chaos soak: 10,000 tasks over 10 minutes of faults, its ledger and throughput
	@scripts/bootstrap.sh --test
	@$(PYTHON) -m bench.chaos.soak $(ARGS)

bench-console: ## the console: list p99 at 1,000,000 tasks, page weight, piano roll draw time
	@scripts/bootstrap.sh --test
	@$(PYTHON) -m bench.console.run $(ARGS)

bench-replay: ## 10,000 archived callbacks replayed through Kafka to the processor vs the renderer alone (prints the ratio)
	@scripts/bootstrap.sh --test
	@$(PYTHON) -m bench.replay.run $(ARGS)

lint:
	@.venv/bin/ruff check services devenv tests bench

typecheck:
	@.venv/bin/mypy

clean:
	rm -rf data .pytest_cache .mypy_cache .ruff_cache
