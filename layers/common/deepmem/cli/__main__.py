from deepmem.cli.app import main

main()
