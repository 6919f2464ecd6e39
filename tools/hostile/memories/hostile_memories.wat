;; Hostile: a wasi:cli/command with three linear memories (one core module instantiated three
;; times), each grown by 16 MiB: under the tool's 32 MiB limit one by one, over it together.
;; Written as text because Rust cannot make a component with several memories; runtime/build.rs
;; compiles it.
(component
  (core module $memory
    (memory 1)
    (func (export "grow") (result i32)
      (memory.grow (i32.const 256))))
  (core instance $a (instantiate $memory))
  (core instance $b (instantiate $memory))
  (core instance $c (instantiate $memory))
  (core module $main
    (import "a" "grow" (func $a (result i32)))
    (import "b" "grow" (func $b (result i32)))
    (import "c" "grow" (func $c (result i32)))
    ;; Exits with an error if a memory could not grow.
    (func (export "run") (result i32)
      (i32.or
        (i32.or
          (i32.eq (call $a) (i32.const -1))
          (i32.eq (call $b) (i32.const -1)))
        (i32.eq (call $c) (i32.const -1)))))
  (core instance $main (instantiate $main
    (with "a" (instance $a))
    (with "b" (instance $b))
    (with "c" (instance $c))))
  (func $run (result (result)) (canon lift (core func $main "run")))
  (instance $cli-run (export "run" (func $run)))
  (export "wasi:cli/run@0.2.12" (instance $cli-run)))
