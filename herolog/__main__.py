from herolog.cli import main

main()
