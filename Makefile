# Entry points; each does its own set-up on a fresh machine (see README.md).
.PHONY: lab lab-down lab-status test lint unit molecule venv

lab:            ## create the local lab and converge site.yml on it
	@scripts/lab.sh up

lab-down:       ## remove the local lab
	@scripts/lab.sh down

lab-status:     ## list the lab's hosts
	@scripts/lab.sh status

test:           ## the whole test suite: lint, unit tests, molecule
	@scripts/test.sh

lint:
	@scripts/test.sh lint

unit:
	@scripts/test.sh unit

molecule:
	@scripts/test.sh molecule

venv:           ## only the controller tool chain (.venv, .collections)
	@scripts/bootstrap.sh
