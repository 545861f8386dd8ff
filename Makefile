# Thin wrapper around ./dev for those who have make; ./dev works without it.
.PHONY: build run test bench clean
build: ; ./dev build
run: ; ./dev run
test: ; ./dev test
bench: ; ./dev bench
clean: ; rm -rf build build-asan build-tsan build-fuzz
