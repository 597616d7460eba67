# Entry points; each does its own set-up on a fresh machine (see README.md).
.PHONY: lab lab-down lab-status test check lint unit molecule bench bench-smoke venv

lab:            ## create the local lab and converge site.yml on it
	@scripts/lab.sh up

lab-down:       ## remove the local lab
	@scripts/lab.sh down

lab-status:     ## list the lab's hosts
	@scripts/lab.sh status

test:           ## the whole test suite: lint, unit tests, molecule
	@scripts/test.sh

check:          ## the inner loop: yamllint, ruff, shellcheck, unit tests that run no playbook (< 1 min)
	@scripts/test.sh check

lint:
	@scripts/test.sh lint

unit:
	@scripts/test.sh unit

molecule:
	@scripts/test.sh molecule

bench-smoke:    ## the bench's short run: proves that make bench works (about 11 min)
	@scripts/test.sh bench

bench:          ## measure deploy and request speed on lab fleets (results in .cache/bench)
	@scripts/bench.sh $(BENCH_ARGS)

venv:           ## only the controller tool chain (.venv, .collections)
	@scripts/bootstrap.sh
