from latentrec.commands.main import main

if __name__ == "__main__":  # `python -m latentrec`; importing the module runs nothing
    main()
